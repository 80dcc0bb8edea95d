"""The README's example configuration is valid: users copy it."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_configuration_example_loads(agentd_env):
    text = README.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "[genesys]" in b and "[[ice.servers]]" in b)
    agentd_env.write_config(example)
    env = {"AGENTD_CLIENT_SECRET": "readme-secret-1", "AGENTD_TURN_PASSWORD": "readme-turn-2", "AGENTD_COLLECTOR_TOKEN": "readme-token-3"}
    result = agentd_env.run("config", "show", extra_env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["genesys"]["region"] == "mypurecloud.com"
    assert shown["genesys"]["client_secret"] == "<secret env:AGENTD_CLIENT_SECRET>"
    assert shown["sinks"]["http"]["url"] == "https://collector.example/agentd/reports"
    assert "readme-secret-1" not in result.stdout


def test_every_command_in_the_readme_reference_exists(agentd_env):
    text = README.read_text()
    section = text[text.index("## CLI reference") : text.index("## The report")]
    named = set(re.findall(r"^\| `agentd ([a-z-]+)", section, flags=re.M))
    result = agentd_env.run("--help")
    listed = set(re.findall(r"^    ([a-z-]+)\s", result.stdout, flags=re.M))
    assert named, "no commands found in the README"
    assert named <= listed, f"in the README but not in agentd: {sorted(named - listed)}"
    assert listed <= named, f"in agentd but not in the README: {sorted(listed - named)}"
