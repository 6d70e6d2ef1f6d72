"""Weights named by a Hugging Face hub id: found in the local cache, or fetched when the hub can be reached.

A library call that is given a hub id (a backbone, a Vocos) must say at once, in one line, when it cannot
have it: ``HF_HUB_OFFLINE`` is set, or the hub does not answer, and the local cache does not hold it.
Left to ``transformers`` or ``huggingface_hub``, the same case ends in a long traceback after ~25 s of
retries, or, for a local path that does not exist, in a complaint about the form of repo ids.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from flow_omni.errors import HubUnavailableError


def looks_like_repo_id(text: str) -> bool:
    """``owner/name``, and nothing that reads as a local path (``./x``, ``~/x``, ``/x``, ``a/b/c``)."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set."""
    # Read the environment at call time too: huggingface_hub caches it at import.
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint.

    Without it an unreachable hub costs ~25 s of huggingface_hub's own retries (measured), and its
    download functions have no per-call switch to turn them off.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def why_no_download() -> str | None:
    """Why nothing can be downloaded now (``"HF_HUB_OFFLINE is set"``, ``"the hub is unreachable"``), or
    None when the hub can be reached."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return "the hub is unreachable"
    return None


def hub_snapshot(
    repo_id: str,
    patterns: Sequence[str],
    *,
    what: str,
    required: Sequence[str] | None = None,
    revision: str | None = None,
    hint: str = "",
    error: type[HubUnavailableError] = HubUnavailableError,
) -> Path:
    """The local folder (a snapshot in the Hugging Face cache) holding the files of hub repo ``repo_id``
    that match ``patterns`` (glob patterns, or plain names).

    They are downloaded when the hub can be reached; otherwise the cache must hold them already. Each
    of ``required`` (default: every pattern) must match a file in the folder. ``what`` names the value in
    the one-line ``error`` (e.g. ``"model.backbone_path"``); ``hint`` follows, saying how to supply it.
    """
    from huggingface_hub import snapshot_download

    required = list(patterns if required is None else required)
    reason = why_no_download()
    tail = f". {hint}" if hint else ""
    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=list(patterns), local_files_only=reason is not None
            )
        )
    except Exception as exc:  # offline and not cached, a 404, a gated repo, DNS...: all mean "not available"
        if reason is not None:
            raise error(f"{what} {repo_id!r} not found locally; {reason}, so it cannot be downloaded{tail}") from None
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise error(
            f"could not fetch {what} {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {first}){tail}"
        ) from None
    missing = [pattern for pattern in required if not any(folder.glob(pattern))]
    if missing:
        if reason is not None:
            raise error(
                f"{what} {repo_id!r} not found locally (the cached copy has no {', '.join(missing)}); {reason}, "
                f"so it cannot be downloaded{tail}"
            )
        raise error(f"{what} {repo_id!r} on the Hugging Face hub has no {', '.join(missing)}{tail}")
    return folder


__all__ = ["hub_offline", "hub_reachable", "hub_snapshot", "looks_like_repo_id", "why_no_download"]
