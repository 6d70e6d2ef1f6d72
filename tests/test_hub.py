"""push_to_hub and `flow-omni push`: everything up to the upload, with only HfApi's two network calls replaced."""

from __future__ import annotations

import sys

import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from flow_omni import FlowOmni, FlowOmniConfig, push_to_hub
from flow_omni.cli import main
from flow_omni.errors import CheckpointError, HubError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    FlowOmni(FlowOmniConfig.preset("tiny", r=4)).save_pretrained(folder)
    # What a killed atomic write leaves behind, at the top and in a subfolder: not part of the model.
    (folder / ".model.safetensors.k3j2.tmp").write_bytes(b"partial")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / ".tokenizer.json.x1.tmp").write_bytes(b"partial")
    return folder


@pytest.fixture
def hub(monkeypatch):
    """HfApi with its network calls replaced: records them and returns what the hub would."""
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kw):
        calls.append(("upload_folder", repo_id, {"folder_path": folder_path, **kw}))
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            commit_message=kw.get("commit_message"),
            commit_description="",
            oid="abc123",
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def uploaded(call) -> list[str]:
    """The files upload_folder would send, chosen by huggingface_hub's own pattern filter."""
    kw = call[2]
    files = sorted(str(p.relative_to(kw["folder_path"])) for p in kw["folder_path"].rglob("*") if p.is_file())
    return list(
        filter_repo_objects(files, allow_patterns=kw.get("allow_patterns"), ignore_patterns=kw["ignore_patterns"])
    )


def test_push_creates_the_repo_and_uploads_the_model_folder(model_dir, hub):
    url = push_to_hub(model_dir, "someone/tiny-flow-omni", private=True)
    assert url == "https://huggingface.co/someone/tiny-flow-omni/commit/abc123"
    (create, repo_id, kw), upload = hub
    assert (create, repo_id) == ("create_repo", "someone/tiny-flow-omni")
    assert kw["private"] is True and kw["exist_ok"] is True  # a second push goes to the same repository
    assert upload[:2] == ("upload_folder", "someone/tiny-flow-omni")
    assert uploaded(upload) == ["README.md", "config.json", "model.safetensors"]
    assert upload[2]["commit_message"] == f"Upload FlowOmni from {model_dir.name}"


def test_push_refuses_before_any_call(tmp_path, model_dir, hub, monkeypatch):
    with pytest.raises(CheckpointError, match="has no config.json; expected a directory written by FlowOmni"):
        push_to_hub(tmp_path, "someone/x")
    with pytest.raises(HubError, match=r"repository id 'not a/valid/id' is not of the form 'name' or 'user/name'"):
        push_to_hub(model_dir, "not a/valid/id")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    with pytest.raises(HubError, match=r"^push_to_hub needs huggingface_hub \(.*\); pip install"):
        push_to_hub(model_dir, "someone/x")
    assert hub == []


def test_push_offline_is_one_line(model_dir):
    # The real HfApi, unpatched: HF_HUB_OFFLINE=1 (tests/conftest.py) stops it before the network.
    with pytest.raises(HubError, match=r"^cannot push to someone/x: HF_HUB_OFFLINE is set"):
        push_to_hub(model_dir, "someone/x")


def test_cli_push(model_dir, hub, tmp_path, capsys):
    assert main(["push", str(model_dir), "someone/tiny", "--message", "first model"]) == 0
    assert capsys.readouterr().out.strip() == f"pushed {model_dir} -> https://huggingface.co/someone/tiny/commit/abc123"
    assert hub[0][2]["private"] is None and hub[1][2]["commit_message"] == "first model"
    assert main(["push", str(tmp_path), "someone/tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flow-omni push: error: ") and err.count("\n") == 1
