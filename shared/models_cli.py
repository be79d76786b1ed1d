"""`driftline models`: what serving serves, and choosing the champion by hand.

    driftline models list [--json]            the champion, why, and every version seen
    driftline models promote MODEL [--version V] [--reason TEXT]
    driftline models unpin                    back to the champion policy
    driftline models rollback                 back to the champion served before
    driftline models reproduce MODEL VERSION  rebuild a version from the topics, compare

They call serving (`SERVING_URL`, default http://127.0.0.1:8000) with the API key
(`DRIFTLINE_API_KEY`, else `DRIFTLINE_API_KEY_FILE`, else `.secrets/api_key`), print
one line per outcome, and exit non-zero with the reason when refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import httpx
from pydantic import SecretStr

from shared.http_keys import load_key

__all__ = ["add_parser", "run"]

SERVING_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0


def add_parser(commands: Any) -> None:
    models = commands.add_parser("models", help="the champion: list, promote, unpin, rollback")
    verbs = models.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="the champion, why, and the versions seen")
    listing.add_argument("--json", action="store_true", help="serving's answer as JSON")
    promote = verbs.add_parser("promote", help="pin MODEL (a version, or its newest)")
    promote.add_argument("model")
    promote.add_argument("--version", help="a published version (default: the newest)")
    promote.add_argument("--reason", help="why (kept on the champions topic)")
    verbs.add_parser("unpin", help="return to the champion policy's choice")
    verbs.add_parser("rollback", help="return to the champion served before this one")
    again = verbs.add_parser(
        "reproduce", help="re-learn a version from the topics up to its offsets and compare"
    )
    again.add_argument("model")
    again.add_argument("version")


class Refused(Exception):
    """A call serving did not do: the one-line reason."""


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = os.environ.get("SERVING_URL", SERVING_URL).rstrip("/")
    headers = {}
    if method != "GET":
        value = os.environ.get("DRIFTLINE_API_KEY")
        try:
            key = load_key(
                "api", SecretStr(value) if value else None, os.environ.get("DRIFTLINE_API_KEY_FILE")
            )
        except ValueError as error:
            raise Refused(str(error)) from error
        if key is None:
            raise Refused("no API key: set DRIFTLINE_API_KEY or run `make secrets`")
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    try:
        response = httpx.request(method, url + path, json=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as error:
        raise Refused(f"serving at {url} did not answer: {error}") from error
    answer: dict[str, Any] = response.json() if response.content else {}
    if response.status_code >= 400:
        raise Refused(f"refused ({response.status_code}): {_detail(answer)}")
    return answer


def _detail(answer: dict[str, Any]) -> str:
    detail = answer.get("detail", answer)
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}]
        return "; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in detail)
    return str(detail)


def _champion_line(champion: dict[str, Any]) -> str:
    pinned = f", pinned at {champion['pinned']}" if champion.get("pinned") else ""
    why = (
        f" ({champion['action']} by {champion['by']}: {champion['reason']})"
        if champion.get("action")
        else " (the initial champion)"
    )
    return f"champion {champion['name']} version {champion['version']}{pinned}{why}"


def _reproduce(args: argparse.Namespace) -> int:
    """In this process: needs Kafka, Redis, the signing key and the pipeline file."""
    from services.training.reproduce import Cannot, describe, reproduce
    from shared.pipeline import load_pipeline
    from shared.registry import ModelRegistry
    from shared.signing import SigningSettings

    settings = SigningSettings()

    async def go() -> int:
        redis = settings.redis()
        registry = ModelRegistry(
            redis,
            namespace=f"driftline:{settings.topic_prefix}registry",
            signing_key=settings.signing_key(),
        )
        try:
            report = await reproduce(
                registry,
                load_pipeline(settings.pipeline_config),
                settings,
                args.model,
                args.version,
            )
        except Cannot as error:
            print(f"driftline models reproduce: {error}", file=sys.stderr)
            return 2
        finally:
            await redis.aclose()
        print(describe(report))
        return 0 if report.identical else 1

    return asyncio.run(go())


def run(args: argparse.Namespace) -> int:
    if args.verb == "reproduce":
        return _reproduce(args)
    try:
        if args.verb == "list":
            answer = _call("GET", "/models")
            if args.json:
                print(json.dumps(answer, indent=2))
                return 0
            print(_champion_line(answer["champion"]))
            for name, versions in answer["models"].items():
                newest = versions[-1] if versions else None
                accuracy = newest["metrics"].get("accuracy") if newest else None
                score = f", accuracy {accuracy:.3f}" if accuracy is not None else ""
                print(f"  {name}: versions {', '.join(v['version'] for v in versions)}{score}")
            return 0
        if args.verb == "promote":
            body = {"model": args.model, "version": args.version}
            if args.reason:
                body["reason"] = args.reason
            answer = _call("POST", "/admin/champion", body)
        elif args.verb == "unpin":
            answer = _call("DELETE", "/admin/champion")
        else:
            answer = _call("POST", "/admin/champion/rollback")
    except Refused as error:
        print(f"driftline models {args.verb}: {error}", file=sys.stderr)
        return 1
    if "champion" in answer:
        print(_champion_line(answer["champion"]))
    else:
        print(f"sent {answer['change']['action']} {answer['change']['model']}; not served yet")
    return 0
