"""age2hie-download NAME...: fetch releases into the Hugging Face cache (or a folder) for offline machines.

Every file is checked against the Hub's record and the release's SHA256SUMS before the release is made
reachable (age2hie_hub.hub.download). Heavy imports happen inside main() so that --help is instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import Any

from age2hie_hub.cli._common import EXIT_ERROR, EXIT_OK, add_verbosity, run_main, setup_logging

PROG = "age2hie-download"
SCAN = "scan.nii.gz"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Download age2hie-hub releases (config.json, model.safetensors, README.md, and model.onnx and "
        "SHA256SUMS when the release has them) so that age2hie-predict --model NAME works offline "
        "(HF_HUB_OFFLINE=1). Every file is checked against the Hub's recorded hash and the release's SHA256SUMS "
        "before the release is installed; a file that fails is deleted and the command exits 1. Bundled aliases "
        "are already in the package. Private repos: set HF_TOKEN; another Hub: HF_ENDPOINT.",
    )
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="alias (age2hie, brain-age), hf-hub:org/name[@rev] or org/name")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit; default: main)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", metavar="DIR",
                       help="Hugging Face cache to fill (default: HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub)")
    where.add_argument("--local-dir", metavar="DIR",
                       help="put the release in this folder instead (one NAME); pass the folder as --model")
    p.add_argument("--json", action="store_true", help="print one JSON object per NAME instead of text")
    add_verbosity(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.local_dir and len(args.names) > 1:
        parser.error("--local-dir takes one NAME (each release needs its own folder)")
    setup_logging(args.verbose, args.quiet)
    return run_main(_run, args, PROG)


def _run(args: argparse.Namespace) -> int:
    from age2hie_hub.errors import Age2HieError
    from age2hie_hub.hub.download import fetch_release

    if args.quiet or args.json or not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    failed = 0
    for name in args.names:
        try:
            release = fetch_release(name, revision=args.revision, cache_dir=args.cache_dir, local_dir=args.local_dir)
        except (Age2HieError, ValueError, OSError) as exc:
            failed += 1
            if args.verbose:
                logging.getLogger(PROG).exception("failed")
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"name": name, "status": "error", "error": str(exc)}), flush=True)
            continue
        command = offline_command(release, args)
        if args.json:
            print(json.dumps({**release.to_dict(), "status": "ok", "error": None, "offline_command": command}),
                  flush=True)
        elif not args.quiet:
            print(_describe(release, command), flush=True)
    if failed and len(args.names) > 1 and not args.quiet:
        print(f"{PROG}: {failed} of {len(args.names)} downloads failed", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def offline_command(release: Any, args: argparse.Namespace) -> str:
    """The exact age2hie-predict command that reads what was just put in place, without a network."""
    env = []
    if release.local_dir is not None:
        model = str(release.local_dir)
        revision = None
    else:
        model, revision = release.name, args.revision
        if release.cache_dir is not None and (args.cache_dir or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")):
            env.append(f"HF_HUB_CACHE={shlex.quote(str(release.cache_dir))}")
    env.append("HF_HUB_OFFLINE=1")
    parts = [*env, "age2hie-predict", "--model", shlex.quote(model)]
    if revision:
        parts += ["--revision", shlex.quote(revision)]
    return " ".join(parts + [SCAN])


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _describe(release: Any, command: str) -> str:
    if release.bundled:
        return (f"{release.name}: already in the package, nothing to download ({release.folder}, files checked "
                f"against its SHA256SUMS)\n  use it offline: {command}")
    total = sum(f.size for f in release.files)
    sums = any("SHA256SUMS" in f.checks for f in release.files)
    lines = [
        f"{release.name}: {release.repo_id} at commit {release.commit} ({len(release.files)} files, {_size(total)}, "
        f"checked against the Hub's hashes{' and the release SHA256SUMS' if sums else '; the release has no SHA256SUMS'})",
        f"  in {release.folder}",
    ]
    width = max(len(f.name) for f in release.files)
    for f in release.files:
        lines.append(f"  {f.name:<{width}}  {_size(f.size):>9}  sha256 {f.sha256[:16]}  ({', '.join(f.checks)})")
    lines.append(f"  use it offline: {command}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
