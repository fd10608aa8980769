"""What an operator reads in the first hour names what the code makes (#78 item 4): the
broker's --store and --stream help and docs/deploy.md name the real stream and buckets (the
stream is <NAME>_MSGS, not <NAME>; the reports bucket too), deploy.md says where nats-server
comes from and gives each server's metrics port, and the shipped scrape config scrapes those
ports."""

from __future__ import annotations

import re
from pathlib import Path

from mq9_broker.cli.dev_broker import DEFAULTS, build_parser
from mq9_broker.identities.kv_store import BUCKET_SUFFIX
from mq9_broker.storage.jetstream import Layout

ROOT = Path(__file__).resolve().parents[3]
# the deployment pages: the cluster, its units, what to watch
PAGES = ("deploy.md", "deploy-systemd.md", "broker-watching.md")
DEPLOY = "".join((ROOT / "docs" / page).read_text() for page in PAGES)
LAYOUT = Layout(DEFAULTS.stream)


def _help(option: str) -> str:
    for action in build_parser()._actions:  # (argparse keeps no public list of them)
        if option in action.option_strings:
            return " ".join((action.help or "").split())
    raise AssertionError(option)


def test_the_help_names_the_real_stream_and_every_bucket():
    store = _help("--store")
    for name in (LAYOUT.messages, *LAYOUT.buckets, LAYOUT.name + BUCKET_SUFFIX):
        assert name in store, (name, store)
    stream = _help("--stream")
    assert f"the stream {LAYOUT.messages}" in stream and "prefix" in stream, stream


def test_deploy_md_names_every_bucket_the_store_makes():
    assert f"`{LAYOUT.messages}`" in DEPLOY
    for bucket in LAYOUT.buckets:
        short = "_" + bucket.removeprefix(LAYOUT.name + "_")
        assert f"`{bucket}`" in DEPLOY or f"`{short}`" in DEPLOY, bucket
    assert f"`{LAYOUT.name}{BUCKET_SUFFIX}`" in DEPLOY
    assert "`KV_<bucket>`" in DEPLOY


def test_deploy_md_says_where_nats_server_comes_from_and_how_long_a_start_takes():
    assert "`.venv/bin/nats-server`" in DEPLOY and '"./broker[server]"' in DEPLOY
    assert "**How long a start takes**" in DEPLOY
    # every server's metrics port, in the table the shipped config follows
    for port in ("9464", "9465", "9466", "9467", "9468", "9469"):
        assert re.search(rf"`--metrics {port}`", DEPLOY), port
