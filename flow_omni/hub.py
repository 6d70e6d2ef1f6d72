"""Publishing a saved FlowOmni on the Hugging Face hub: :func:`push_to_hub`.

What goes up is the folder ``save_pretrained`` wrote, as it is: ``config.json``, ``model.safetensors``, the
model card ``README.md`` and, for a Hugging Face tokenizer, ``tokenizer/``. Loading it back is
``FlowOmni.from_pretrained`` of a download (``huggingface_hub.snapshot_download(repo_id)``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from flow_omni.checkpoint import WEIGHTS_NAME, read_checkpoint_config
from flow_omni.errors import CheckpointError, HubError
from flow_omni.model_card import CARD_NAME

#: Temporary files of an atomic write that was killed (``checkpoint.atomic_write``), at the top or in a
#: subfolder: never uploaded.
PARTIAL_WRITES = [".*.tmp", "*/.*.tmp"]


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a FlowOmni folder written by ``save_pretrained`` to the hub model repository ``repo_id``
    (``user/name``, created when it does not exist); returns the URL of the commit.

    ``token`` defaults to what ``huggingface_hub`` finds (``HF_TOKEN``, or ``hf auth login``).

    Raises:
        CheckpointError: ``model_dir`` is not a saved FlowOmni (checked before anything is sent).
        HubError: huggingface_hub is not installed, ``repo_id`` is malformed, ``HF_HUB_OFFLINE`` is set, or
            the hub refused the request.
    """
    directory = Path(model_dir)
    read_checkpoint_config(directory, "FlowOmni")
    if not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{directory} has a config.json but no {WEIGHTS_NAME}; it is not a complete saved model")
    try:  # here, not at the top: pushing is the only use of huggingface_hub's upload API in flow_omni
        from huggingface_hub import HfApi
        from huggingface_hub.utils import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, validate_repo_id
    except ImportError as exc:
        raise HubError(f"push_to_hub needs huggingface_hub ({exc}); pip install 'huggingface_hub>=0.20'") from None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"repository id {repo_id!r} is not of the form 'name' or 'user/name'") from None
    if not (directory / CARD_NAME).is_file():
        warnings.warn(f"{directory} has no {CARD_NAME} model card (saved by an older flow_omni)", stacklevel=2)
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=directory,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload FlowOmni from {directory.name}",
            ignore_patterns=PARTIAL_WRITES,
        )
    except OfflineModeIsEnabled:
        raise HubError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (unset it to reach the hub)") from None
    except (HfHubHTTPError, OSError) as exc:  # the hub said no, or (requests-based versions) no connection
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(f"pushing {directory} to {repo_id} failed: {reason}") from None
    return commit.commit_url


__all__ = ["PARTIAL_WRITES", "push_to_hub"]
