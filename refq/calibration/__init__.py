"""Calibration: observers (min-max, moving average, percentile, entropy, MSE) and data readers."""

from refq.calibration.observers import (
    OBSERVERS,
    EmaMinMaxObserver,
    EntropyObserver,
    Histogram,
    MinMaxObserver,
    MSEObserver,
    Observer,
    ObserverSpec,
    PercentileObserver,
)
from refq.calibration.readers import (
    CalibrationReader,
    Progress,
    SentenceReader,
    TokenWindows,
    byte_windows,
    tokenizer_windows,
)

__all__ = [
    "OBSERVERS",
    "CalibrationReader",
    "EmaMinMaxObserver",
    "EntropyObserver",
    "Histogram",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "ObserverSpec",
    "PercentileObserver",
    "Progress",
    "SentenceReader",
    "TokenWindows",
    "byte_windows",
    "tokenizer_windows",
]
