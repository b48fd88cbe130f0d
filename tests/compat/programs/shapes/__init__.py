"""A user's own importable module for the compat programs: its functions and classes must
travel by reference (the workers import this module), as on Ray."""

from __future__ import annotations

import math


class Circle:
    def __init__(self, radius: float) -> None:
        self.radius = radius

    def area(self) -> float:
        return math.pi * self.radius**2


def grow(circle: Circle, factor: float) -> Circle:
    return Circle(circle.radius * factor)


def check_positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"expected a positive value, got {value}")
    return value
