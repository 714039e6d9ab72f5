"""wuremote: repair Windows Update on remote Windows hosts over WinRM/PSRP."""

__version__ = "0.1.0"
