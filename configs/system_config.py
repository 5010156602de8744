"""diag-distill configuration.

Keys are never written here: they come from the environment
(``DIAG_API_<i>_KEY``, ``DIAG_API_<i>_BASE_URL``, ``DIAG_API_<i>_MODEL``, or
``DIAG_API_KEY`` / ``DIAG_BASE_URL`` / ``DIAG_MODEL`` for every endpoint), or from
the git-ignored ``configs/local_config.py``, whose upper-case names override
these. With no key at all every endpoint is the offline teacher; once one endpoint has a
key, keyless endpoints are left out unless ``DIAG_API_<i>_PROVIDER=local`` asks for it.
"""

import os

from distill.core.config import endpoint_table

#: api_1 ... api_16: name, base_url, model, api_key (from the environment),
#: provider ("openai" or "local"), json_mode, timeout (seconds per request),
#: max_attempts (5), backoff_base / backoff_cap (1 s / 60 s: retry waits, full jitter),
#: max_tokens (4096), temperature (0).
MULTI_API_CONFIG = endpoint_table(16)

INPUT_DIR = os.environ.get("DIAG_INPUT_DIR", "dataset")
OUTPUT_DIR = os.environ.get("DIAG_OUTPUT_DIR", "/hy-tmp/output_diag_continuous")
CHECK_INTERVAL = 5  # seconds between looks for new reports and status updates
MAX_REPORT_BYTES = 2_000_000  # larger report files are bad_input
#: Each model answer's text is kept (keys masked) in the raw file and failure record, cut after this many
#: characters with the cut marked.
ANSWER_RECORD_CHARS = 20_000

#: Optional prices per million tokens, by model id: input, cached_input (prompt tokens served from the
#: endpoint's prefix cache; defaults to input) and output. Costs appear in the monitor, stats and raw
#: outputs for priced models, and ``start --max-cost`` stops a job at a budget. Example:
#: MODEL_PRICES = {"deepseek-chat": {"input": 0.27, "cached_input": 0.07, "output": 1.10}}
MODEL_PRICES: dict[str, dict[str, float]] = {}
