"""``flow-omni push``: publish a trained model on the Hugging Face hub."""

from __future__ import annotations

import argparse

from flow_omni.hub import push_to_hub


def push_command(args: argparse.Namespace) -> None:
    """upload a trained model folder (save_pretrained / train's model/) to a Hugging Face hub repository

    Uploads config.json, model.safetensors, the model card README.md and tokenizer/ (if any) to REPO_ID,
    creating the repository when it does not exist. The token is huggingface_hub's: HF_TOKEN, or
    `hf auth login`. The folder is checked before anything is sent.
    """
    url = push_to_hub(
        args.model_dir, args.repo_id, private=args.private or None, commit_message=args.message, revision=args.revision
    )
    print(f"pushed {args.model_dir} -> {url}")


def push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a trained FlowOmni folder")
    p.add_argument("repo_id", help="hub repository, user/name")
    p.add_argument("--private", action="store_true", help="create the repository as private (if it is new)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--revision", help="branch to push to (default: main)")
