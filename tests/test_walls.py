"""The three walls hold at run time too: the API app starts in a process that cannot import
torch or TransformerLens (its container has neither)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK_AND_BUILD = """
import sys
sys.modules['torch'] = None            # any import of torch now raises ImportError
sys.modules['transformer_lens'] = None
from circuitreg.services.api.app import create_app
from circuitreg.settings import get_settings
from circuitreg.migrations.relational import upgrade
settings = get_settings()
upgrade(settings.resolved_database_url)
app = create_app(settings)
from fastapi.testclient import TestClient
with TestClient(app) as client:
    assert client.get('/healthz').status_code == 200
    ready = client.get('/readyz')
    assert ready.status_code == 200, ready.text
prefixes = ('torch', 'transformer_lens', 'circuitreg.workers')
loaded = [m for m in sys.modules if m.startswith(prefixes)]
loaded = [m for m in loaded if sys.modules[m] is not None]
assert not loaded, loaded
print('api-without-torch-ok')
"""


def test_api_starts_and_answers_without_torch(tmp_path: Path) -> None:
    env = {"CIRCUITREG_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_AND_BUILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "api-without-torch-ok" in result.stdout
