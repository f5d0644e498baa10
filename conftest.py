"""Set before anything from the HF stack is imported, for the tests and for the doctests that
`make test` collects from hf_ext/ and trainers/: nothing touches the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
