"""The deployment files name only things that exist: paths, settings, commands, scopes.

docker isn't available where the tests run, so the Dockerfile and compose file are parsed and checked
against the project instead of built.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from bots.cli import app
from bots.doctor import SLACK_SCOPES
from core.config import Settings
from tests.fakes.slack import BOT_SCOPES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# names of the contract that deploy/env.example documents ahead of the code that reads them; each leaves
# this list when core/config.py's Settings reads it
NOT_YET_READ: set[str] = set()
ASSIGNMENT = re.compile(r"^#?\s?([A-Z][A-Z0-9_]+)=(.*)$")


def settings_variables() -> dict[str, str]:
    """{environment variable: Settings field}."""
    out = {}
    for name, field in Settings.model_fields.items():
        for alias in getattr(field.validation_alias, "choices", [field.validation_alias]):
            out[str(alias)] = name
    return out


def env_example() -> dict[str, str]:
    """{variable: the default the file shows}, from `NAME=` and `# NAME=default` lines."""
    found = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if m := ASSIGNMENT.match(line):
            assert m[1] not in found, f"{m[1]} twice in env.example"
            found[m[1]] = m[2].strip()
    return found


def commands() -> set[str]:
    return {c.name or c.callback.__name__ for c in app.registered_commands}


def test_env_example_lists_every_setting_and_nothing_else():
    documented, read = set(env_example()), set(settings_variables())
    assert read - documented == set(), "settings missing from deploy/env.example"
    assert documented - read - NOT_YET_READ == set(), "deploy/env.example names variables nothing reads"
    assert NOT_YET_READ & read == set(), "read now: take it off NOT_YET_READ"


def test_env_example_defaults_are_the_real_defaults():
    fields = settings_variables()
    for name, shown in env_example().items():
        field = fields.get(name)
        if field is None or not shown or name == "EARSHOT_DB":
            continue
        default = Settings.model_fields[field].default
        assert getattr(Settings(**{field: shown}), field) == default, f"{name}={shown} is not the default {default!r}"


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    assert [v for v in settings_variables() if f"`{v}`" not in readme] == []
    assert "earshot doctor" in readme and "deploy/env.example" in readme


def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_names_files_settings_and_commands_that_exist():
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    base = dict(steps)["FROM"]
    assert base.startswith("python:3.") and "slim" in base
    assert any(k == "RUN" and "apt-get install" in arg and "ffmpeg" in arg for k, arg in steps)
    for kind, arg in steps:
        if kind == "COPY":
            *sources, _ = shlex.split(arg)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the project"
    env = {}
    for kind, arg in steps:
        if kind == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(arg))
    known = settings_variables()
    assert [v for v in env if v not in known and not v.startswith("PYTHON")] == []
    volume = dict(steps)["VOLUME"].strip()
    assert Path(env["EARSHOT_DB"]).parent == Path(volume), "the database must live on the volume"
    user = dict(steps)["USER"].strip()
    assert user not in ("root", "0") and kinds.index("USER") > kinds.index("RUN")
    assert any(k == "RUN" and "useradd" in arg and user in arg for k, arg in steps)
    health = dict(steps)["HEALTHCHECK"]
    assert "healthcheck.py" in health and (DEPLOY / "healthcheck.py").exists()
    assert "healthcheck.py" in " ".join(arg for k, arg in steps if k == "COPY")
    assert dict(steps)["ENTRYPOINT"].strip() == '["earshot"]'
    assert 'earshot = "bots.launch:main"' in (ROOT / "pyproject.toml").read_text()


def test_compose_runs_both_bots_from_one_image_volume_and_env_file():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"telegram", "slack", "whatsapp"}
    known = settings_variables()
    for name in ("telegram", "slack", "whatsapp"):
        svc = services[name]
        assert svc["command"][0] in commands()
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        assert svc["env_file"] == ".env" and (DEPLOY / "env.example").is_file()
        assert set(svc.get("environment", {})) <= set(known)
        volume, target = svc["volumes"][0].split(":")[:2]
        assert volume in compose["volumes"]
        assert Path(svc["environment"]["EARSHOT_DB"]).parent == Path(target)
    assert services["telegram"]["image"] == services["slack"]["image"] == services["whatsapp"]["image"]
    assert services["whatsapp"]["profiles"] == ["whatsapp"] and "profiles" not in services["slack"]
    assert "PostgreSQL" in (DEPLOY / "compose.yaml").read_text()


def test_systemd_units_are_hardened_and_write_only_their_data_directory():
    for unit in ("earshot-telegram.service", "earshot-slack.service", "earshot-whatsapp.service"):
        entries: dict[str, list[str]] = {}
        for line in (DEPLOY / unit).read_text().splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, value = line.split("=", 1)
                entries.setdefault(key, []).append(value)
        for key, want in (("NoNewPrivileges", "true"), ("ProtectSystem", "strict"), ("PrivateTmp", "true")):
            assert entries[key] == [want], unit
        env = dict(v.split("=", 1) for v in entries["Environment"])
        assert set(env) <= set(settings_variables())
        assert str(Path(env["EARSHOT_DB"]).parent) in entries["ReadWritePaths"][0].split()
        exec_start = shlex.split(entries["ExecStart"][0])
        assert exec_start[0].endswith("/earshot") and exec_start[1] in commands()


def test_slack_scopes_agree_between_manifest_doctor_and_stand_in():
    manifest = yaml.safe_load((DEPLOY / "slack-manifest.yml").read_text())
    wanted = manifest["oauth_config"]["scopes"]["bot"]
    assert sorted(wanted) == sorted(SLACK_SCOPES) == sorted(BOT_SCOPES)


def test_importing_the_cli_loads_no_chat_library_or_server():
    code = ("import sys, bots.cli; heavy = {'telegram', 'slack_bolt', 'slack_sdk', 'aiohttp', 'httpx', 'pydantic', "
            "'sqlite_utils', 'prometheus_client'}; print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_compose_postgres_variant_runs_replicas_of_both_bots_on_its_own_postgres_service():
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    pg = yaml.safe_load((DEPLOY / "compose.postgres.yaml").read_text())
    services = pg["services"]
    db = services["postgres"]
    assert db["image"].startswith("postgres:") and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["volumes"][0].split(":")[0] in pg["volumes"]
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")   # from .env, never here
    for name in ("telegram", "slack"):
        assert name in base["services"]                     # it overrides the base file's bots
        url = services[name]["environment"]["EARSHOT_DB"]
        assert url.startswith("postgresql://earshot:${POSTGRES_PASSWORD") and url.endswith("@postgres:5432/earshot")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        replicas = services[name]["deploy"]["replicas"]
        assert replicas >= 2
        for port in base["services"][name]["ports"]:      # each replica takes a host port of its own
            first, last = port.split(":")[-2].split("-")
            assert int(last) - int(first) + 1 >= replicas
    assert "compose.postgres.yaml" in (DEPLOY / "compose.yaml").read_text()
