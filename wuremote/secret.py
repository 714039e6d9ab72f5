"""A password that cannot leak by accident: masked in str/repr/format, revealed only on purpose."""

from __future__ import annotations


class Secret:
    """Carries a credential through the code; only ``reveal()`` gives the text back.

    Every log line, report, journal row, exception message and ``repr`` of a public object
    goes through ``str``/``repr``/``format``, and those say ``***``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds text")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("a Secret is not pickled; pass the environment variable name instead")
