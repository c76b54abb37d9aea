"""Shared test set-up: silence torch's export chatter so failures stay readable."""

import warnings

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
