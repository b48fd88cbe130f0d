"""``ray.runtime_env.RuntimeEnv``: a runtime environment spelled as a class, as Ray programs
write ``f.options(runtime_env=RuntimeEnv(env_vars={...}))``.

As in Ray it is a ``dict`` holding the fields that were given, so it goes wherever a
``runtime_env`` dict goes and means the same: which fields raylite's local runtime honours
(``env_vars``) and the error the others give is decided where the option is checked, not
here.

Example::

    from raylite.runtime_env import RuntimeEnv

    env = RuntimeEnv(env_vars={"OMP_NUM_THREADS": "2"})
    assert env == {"env_vars": {"OMP_NUM_THREADS": "2"}}
    assert env.env_vars() == {"OMP_NUM_THREADS": "2"}
"""

from __future__ import annotations

from typing import Any

__all__ = ["RuntimeEnv"]


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """A runtime environment: Ray's fields as keywords, kept when not ``None``.

    Args:
        env_vars: environment variables set in the task's or actor's process.
        py_modules, py_executable, working_dir, pip, conda, container,
        worker_process_setup_hook, nsight, rocprof_sys, config, image_uri, uv: Ray's other
            fields, kept as given (raylite's local runtime refuses them when the option is
            used, saying why).
        **kwargs: further fields (Ray plugins), kept as given.
    """

    def __init__(
        self,
        *,
        py_modules: list[str] | None = None,
        py_executable: str | None = None,
        working_dir: str | None = None,
        pip: list[str] | None = None,
        conda: dict[str, str] | str | None = None,
        container: dict[str, str] | None = None,
        env_vars: dict[str, str] | None = None,
        worker_process_setup_hook: Any = None,
        nsight: dict[str, str] | str | None = None,
        rocprof_sys: Any = None,
        config: Any = None,
        _validate: bool = True,
        image_uri: str | None = None,
        uv: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        fields = {
            "py_modules": py_modules, "py_executable": py_executable,
            "working_dir": working_dir, "pip": pip, "conda": conda, "container": container,
            "env_vars": env_vars, "worker_process_setup_hook": worker_process_setup_hook,
            "nsight": nsight, "rocprof_sys": rocprof_sys, "config": config,
            "image_uri": image_uri, "uv": uv, **kwargs,
        }  # fmt: skip
        self.update({key: value for key, value in fields.items() if value is not None})

    def env_vars(self) -> dict[str, str]:
        """The environment variables it sets (empty if none)."""
        return dict(self.get("env_vars") or {})
