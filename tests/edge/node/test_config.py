"""Edge configuration: a TOML file, flags on top, the environment for secrets; every
key and value checked at start, and refusals name the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinedge.core.config import ConfigError, load
from pinedge.edge.node.config import EdgeConfig

ORIGIN = 'origin = "http://127.0.0.1:8090"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(EdgeConfig, write(tmp_path, text), overrides)
    return str(caught.value)


# ── refusals ─────────────────────────────────────────────────────────────────


def test_an_unknown_key_is_refused_by_name(tmp_path):
    message = refusal(tmp_path, ORIGIN + 'colour = "red"\n')
    assert message.startswith("colour: unknown key")


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        pytest.param('cache_mem = "lots"', "cache_mem", "not a size", id="size"),
        pytest.param('drain_time = "soon"', "drain_time", "not a duration", id="duration"),
        pytest.param('control = "ftp://control.test"', "control", "not an http", id="url"),
        pytest.param('listen = "nowhere"', "listen", "HOST:PORT", id="host-port"),
        pytest.param('listen = "127.0.0.1:70000"', "listen", "out of range", id="port-range"),
        pytest.param('workers = "two"', "workers", "whole number", id="int-type"),
        pytest.param('role = "cache"', "role", "not one of", id="choice"),
        pytest.param(
            "client_cache_control = 3", "client_cache_control", "true or false", id="bool"
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_reason(tmp_path, line, key, reason):
    message = refusal(tmp_path, ORIGIN + line + "\n")
    assert message.startswith(f"{key}: ")
    assert reason in message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param('image_engines = {"shrink.webp" = "vips"}', "OPERATION.FORMAT", id="op"),
        pytest.param('image_engines = {"resize.webp" = "magick"}', "not vips", id="engine"),
    ],
)
def test_a_bad_image_engine_is_refused_naming_the_entry(tmp_path, line, reason):
    message = refusal(tmp_path, ORIGIN + line + "\n")
    assert "image_engines: " in message
    assert reason in message


def test_a_bad_origin_url_is_refused_naming_the_key(tmp_path):
    message = refusal(tmp_path, 'origin = "not a url"\n')
    assert message.startswith("origin: ")
    assert "not an http" in message


def test_both_origin_and_sites_is_refused(tmp_path):
    message = refusal(
        tmp_path,
        ORIGIN + '[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "http://127.0.0.1:9000"\n',
    )
    assert "origin" in message
    assert "sites" in message
    assert "both" in message


SITE = '[[sites]]\nname = "a"\nhosts = ["a.test"]\n'
POOL = '[[sites.origins]]\nurl = "http://127.0.0.1:9001"\n'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(SITE, "give either origin or [[sites.origins]]", id="no-origin"),
        pytest.param(
            SITE + 'origin = "http://127.0.0.1:9000"\n' + POOL,
            "give either origin or [[sites.origins]]",
            id="origin-and-pool",
        ),
        pytest.param(SITE + POOL + "backup = true\n", "must not be a backup", id="all-backup"),
        pytest.param(SITE + POOL + "weight = 0\n", "between 1 and 100", id="weight"),
        pytest.param(
            'role = "shield"\nshield = ["http://127.0.0.1:9300"]\n' + ORIGIN,
            "no shields of its own",
            id="shield-of-a-shield",
        ),
        pytest.param('shield = ["nowhere"]\n' + ORIGIN, "not an http", id="shield-url"),
    ],
)
def test_a_bad_upstream_setting_is_refused_with_its_reason(tmp_path, text, reason):
    assert reason in refusal(tmp_path, text)


def test_a_site_takes_a_pool_of_weighted_origins_and_backups(tmp_path):
    text = SITE + POOL + "weight = 3\n" + POOL.replace("9001", "9002") + "backup = true\n"
    config = load(EdgeConfig, write(tmp_path, text))
    assert config.sites[0].pool() == [
        ("http://127.0.0.1:9001", 3, False),
        ("http://127.0.0.1:9002", 1, True),
    ]


def test_neither_origin_nor_sites_is_refused_with_a_hint(tmp_path):
    message = refusal(tmp_path, 'listen = "127.0.0.1:8080"\n')
    assert "--origin" in message


def test_an_unknown_key_inside_a_site_is_named_with_its_index(tmp_path):
    text = (
        '[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "http://127.0.0.1:9000"\n'
        '[[sites]]\nname = "b"\nhosts = ["b.test"]\norigin = "http://127.0.0.1:9001"\n'
        'colour = "red"\n'
    )
    assert refusal(tmp_path, text).startswith("sites[1].colour: unknown key")


def test_a_file_that_is_not_toml_is_refused(tmp_path):
    assert "not valid TOML" in refusal(tmp_path, "origin = \n")


# ── values ───────────────────────────────────────────────────────────────────


def test_flags_win_over_the_file(tmp_path):
    path = write(tmp_path, ORIGIN + 'listen = "127.0.0.1:9000"\ncache_mem = "1MiB"\n')
    config = load(EdgeConfig, path, {"listen": "127.0.0.1:9100", "cache_mem": None})
    assert config.listen == "127.0.0.1:9100"
    assert config.cache_mem == 1024**2, "a flag that was not given leaves the file's value"


def test_a_bad_flag_is_refused_like_a_bad_file_value(tmp_path):
    message = refusal(tmp_path, ORIGIN, {"cache_mem": "heaps"})
    assert message.startswith("cache_mem: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"512MiB"', 512 * 1024**2, id="mebibytes"),
        pytest.param('"2GB"', 2 * 1000**3, id="gigabytes"),
        pytest.param('"64KiB"', 64 * 1024, id="kibibytes"),
        pytest.param("4096", 4096, id="plain-int"),
        pytest.param('"4096"', 4096, id="plain-string"),
    ],
)
def test_sizes_are_read_in_bytes(tmp_path, value, expected):
    config = load(EdgeConfig, write(tmp_path, ORIGIN + f"cache_mem = {value}\n"))
    assert config.cache_mem == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"250ms"', 0.25, id="milliseconds"),
        pytest.param('"30s"', 30.0, id="seconds"),
        pytest.param('"5m"', 300.0, id="minutes"),
        pytest.param('"1h"', 3600.0, id="hours"),
        pytest.param("7", 7.0, id="plain-number"),
    ],
)
def test_durations_are_read_in_seconds(tmp_path, value, expected):
    config = load(EdgeConfig, write(tmp_path, ORIGIN + f"first_byte_timeout = {value}\n"))
    assert config.first_byte_timeout == expected


def test_dashed_keys_mean_the_same_as_underscored_ones(tmp_path):
    config = load(EdgeConfig, write(tmp_path, ORIGIN + 'cache-mem = "1MiB"\n'))
    assert config.cache_mem == 1024**2


def test_the_admin_token_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", "s3cret")
    assert load(EdgeConfig, write(tmp_path, ORIGIN)).admin_token == "s3cret"


def test_the_admin_token_cannot_be_set_in_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PINEDGE_ADMIN_TOKEN", raising=False)
    message = refusal(tmp_path, ORIGIN + 'admin_token = "in-the-file"\n')
    assert message.startswith("admin_token: unknown key")


def test_sites_are_read_with_their_hosts_and_origins(tmp_path):
    text = (
        '[[sites]]\nname = "a"\nhosts = ["A.test."]\norigin = "http://127.0.0.1:9000/"\n'
        '[[sites]]\nname = "b"\nhosts = ["b.test", "www.b.test"]\n'
        'origin = "http://127.0.0.1:9001"\n'
    )
    sites = load(EdgeConfig, write(tmp_path, text)).site_list()
    assert [(s.name, s.hosts, s.origin) for s in sites] == [
        ("a", ["a.test"], "http://127.0.0.1:9000"),
        ("b", ["b.test", "www.b.test"], "http://127.0.0.1:9001"),
    ]


def test_an_origin_alone_answers_for_localhost_and_extra_hosts(tmp_path):
    config = load(EdgeConfig, write(tmp_path, ORIGIN + 'hosts = ["cdn.test"]\n'))
    (site,) = config.site_list()
    assert {"localhost", "127.0.0.1", "cdn.test"} <= set(site.hosts)
