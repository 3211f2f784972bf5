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
# read by Docker Compose from deploy/.env, not by earshot
COMPOSE_ONLY = {"COMPOSE_PROFILES"}
# a profile per bot: the ones that exist, and the names kept for bots still to come
BOT_PROFILES = {"telegram", "slack"}
RESERVED_PROFILES = {"whatsapp", "discord"}
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
    assert documented - read - NOT_YET_READ - COMPOSE_ONLY == set(), "deploy/env.example names variables nothing reads"
    assert NOT_YET_READ & read == set(), "read now: take it off NOT_YET_READ"


def test_env_example_defaults_are_the_real_defaults():
    fields = settings_variables()
    for name, shown in env_example().items():
        field = fields.get(name)
        if field is None or not shown or name == "EARSHOT_DB":
            continue
        default = Settings.model_fields[field].default
        assert getattr(Settings(**{field: shown}), field) == default, f"{name}={shown} is not the default {default!r}"


def test_configuration_guide_documents_every_setting():
    guide = (ROOT / "docs" / "configuration.md").read_text()
    assert [v for v in settings_variables() if f"`{v}`" not in guide] == []
    readme = (ROOT / "README.md").read_text()
    assert "earshot doctor" in readme and "deploy/env.example" in readme and "docs/configuration.md" in readme


def test_readme_is_what_a_newcomer_needs_in_the_first_hour():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    assert "https://modelstudio.console.alibabacloud.com/" in readme and "DASHSCOPE_API_KEY" in readme
    assert "bin/earshot transcribe" in readme and "\nbin/test" in readme
    assert "PYTHON=" in readme and "3.11" in readme
    for option in ("--verbose", "--listen", "--json", "--format", "-h"):
        assert option in readme, f"{option} is not in the README"
    assert all(f"`earshot {name}" in readme for name in commands()), "a command missing from the table"
    # every guide it points to exists, and every guide is pointed to
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    assert linked == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert all((ROOT / path).is_file() for path in linked)
    # what moved out stays findable
    for guide, words in {"scaling.md": ("Replicas", "EARSHOT_JOB_LEASE"), "links.md": ("private", "redirect"),
                         "architecture.md": ("JobRunner",), "translations.md": ("bin/translations extract",),
                         "deployment.md": ("COMPOSE_PROFILES=telegram", "sysusers", "127.0.0.1")}.items():
        text = (ROOT / "docs" / guide).read_text()
        assert all(w in text for w in words), guide


def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_names_files_settings_and_commands_that_exist():
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    base = dict(steps)["FROM"]
    assert base.startswith("python:3.") and "slim" in base
    # one ffmpeg: the imageio-ffmpeg wheel's, chosen explicitly; no distribution ffmpeg beside it
    assert not any(k == "RUN" and "apt-get" in arg for k, arg in steps)
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
    assert all(services[name]["profiles"] == [name] for name in ("telegram", "slack", "whatsapp", "discord"))
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


# the bot scopes each Web API method and event needs, from Slack's method and event pages
METHOD_SCOPES = {
    "auth.test": set(), "views.publish": set(), "apps.connections.open": set(),   # the last: the app-level token
    "chat.postMessage": {"chat:write"}, "chat.update": {"chat:write"}, "chat.postEphemeral": {"chat:write"},
    "conversations.history": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "conversations.replies": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "files.info": {"files:read"}, "files.uploadV2": {"files:write"}, "reactions.get": {"reactions:read"},
    "users.info": {"users:read"},
}
EVENT_SCOPES = {"app_mention": {"app_mentions:read"}, "message.im": {"im:history"},
                "message.channels": {"channels:history"}, "message.groups": {"groups:history"},
                "reaction_added": {"reactions:read"}, "app_home_opened": set()}
_SDK_CALL = re.compile(r"client\.((?:auth|apps|chat|conversations|files|reactions|users|views)_[A-Za-z0-9_]+)\(")
_READ_CALL = re.compile(r"read\([\w.]+, \"([a-z]+\.[A-Za-z]+)\"")


def test_the_manifest_asks_for_the_scopes_earshot_uses_and_no_others():
    methods: set[str] = set()
    for source in (ROOT / "bots" / "slack").glob("*.py"):
        text = source.read_text()
        methods |= {m.replace("_", ".", 1).replace("upload_v2", "uploadV2") for m in _SDK_CALL.findall(text)}
        methods |= set(_READ_CALL.findall(text))
    assert {"chat.postMessage", "reactions.get", "users.info", "files.uploadV2"} <= methods, methods
    assert methods <= METHOD_SCOPES.keys(), f"add the scopes of {methods - METHOD_SCOPES.keys()} here"
    manifest = yaml.safe_load((DEPLOY / "slack-manifest.yml").read_text())
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    needed = set().union(*(METHOD_SCOPES[m] for m in methods), *(EVENT_SCOPES[e] for e in events))
    needed |= {"commands"} if manifest["features"]["slash_commands"] or manifest["features"]["shortcuts"] else set()
    needed |= {"files:read"}             # downloading a shared file with the bot token (bots/slack/files.py)
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(needed)
    assert sorted(SLACK_SCOPES) == sorted(needed)        # and doctor checks exactly those


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


def test_image_installs_the_locked_dependencies_in_their_own_layer_before_the_code():
    steps = dockerfile()
    env: dict[str, str] = {}
    for kind, arg in steps:
        if kind == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(arg))
    assert env["EARSHOT_FFMPEG"] == "bundled"
    copies = [(i, shlex.split(arg)) for i, (kind, arg) in enumerate(steps) if kind == "COPY"]
    lock_copy = next(i for i, args in copies if args[0] == "deploy/requirements.lock")
    code_copy = min(i for i, args in copies if args[0] in ("core", "bots", "pyproject.toml"))
    deps = next(i for i, (kind, arg) in enumerate(steps) if kind == "RUN" and "requirements.lock" in arg)
    assert lock_copy < deps < code_copy, "dependencies are installed before the code is copied"
    assert "--require-hashes" in steps[deps][1] and "--no-deps" in steps[deps][1]
    project = next(arg for kind, arg in steps[code_copy:] if kind == "RUN" and "pip install" in arg)
    assert "--no-deps" in project, "the project's own install adds nothing the lock file didn't pin"


def test_lock_file_pins_every_runtime_dependency_with_hashes():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    lock = (DEPLOY / "requirements.lock").read_text()
    pinned: dict[str, str] = {}
    for block in re.sub(r"\\\n\s*", " ", lock).splitlines():
        if block.strip() and not block.lstrip().startswith("#"):
            name, rest = block.split("==", 1)
            version = rest.split()[0]
            assert "--hash=sha256:" in rest, f"{name} has no hash"
            pinned[canonicalize_name(name.strip())] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    image_python = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
                    "platform_system": "Linux"}
    for line in project["dependencies"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(image_python):
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} is not in deploy/requirements.lock: regenerate it (its header says how)"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"deploy/requirements.lock pins {name}=={pinned[name]}, pyproject.toml wants {req.specifier}"


def test_dockerignore_keeps_environments_databases_and_secrets_out_of_the_build():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "*.db", ".env", "**/.env", "deploy/.env", "**/__pycache__"} <= ignored
    for kind, arg in dockerfile():
        if kind == "COPY":
            for source in shlex.split(arg)[:-1]:
                assert source not in ignored, f"COPY {source} but .dockerignore leaves it out"


def test_compose_starts_only_the_bots_named_in_compose_profiles():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name in BOT_PROFILES:
        assert services[name]["profiles"] == [name], f"the {name} bot is the profile `{name}`, and only that"
    text = (DEPLOY / "compose.yaml").read_text()
    assert "COMPOSE_PROFILES" in text and all(name in text for name in RESERVED_PROFILES)
    for name in RESERVED_PROFILES & set(services):      # a bot added later is a profile of its own too
        assert services[name]["profiles"] == [name]
    assert "COMPOSE_PROFILES" in env_example()
    readme = (ROOT / "README.md").read_text()
    assert "COMPOSE_PROFILES=telegram" in readme


def test_a_bot_without_its_token_is_not_restarted_forever():
    from bots.cli import EXIT_CONFIG
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        restart = svc.get("restart", "no")
        assert restart not in ("always", "unless-stopped"), f"{name}: restart: {restart} retries a bad token forever"
        if restart.startswith("on-failure"):
            assert ":" in restart and 0 < int(restart.split(":")[1]) <= 10, f"{name}: on-failure needs a limit"
    for unit in ("earshot-telegram.service", "earshot-slack.service"):
        text = (DEPLOY / unit).read_text()
        assert f"\nRestartPreventExitStatus={EXIT_CONFIG}\n" in text, unit


def test_compose_publishes_every_port_on_loopback_only():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    slack = compose["services"]["slack"]
    assert slack["ports"][0] == "127.0.0.1:3000-3001:3000" and slack["command"][-1] == "3000"


def test_systemd_units_user_is_created_by_the_sysusers_file():
    sysusers = [line.split() for line in (DEPLOY / "earshot.sysusers.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    created = {fields[1] for fields in sysusers if fields[0] == "u"}
    for unit in ("earshot-telegram.service", "earshot-slack.service"):
        text = (DEPLOY / unit).read_text()
        user = re.search(r"^User=(\S+)$", text, re.M)
        dynamic = re.search(r"^DynamicUser=yes$", text, re.M)
        assert dynamic or (user and user[1] in created), f"{unit}: nothing creates its user"
        assert "earshot.sysusers.conf" in text and "systemd-sysusers" in text, f"{unit}: say how the user is made"
