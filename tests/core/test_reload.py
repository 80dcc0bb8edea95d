"""Reloading the configuration is all or nothing, in every plugin."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agentd import hookimpl
from agentd.app import App
from agentd.config import ConfigSection
from agentd.errors import ConfigError


@dataclass(frozen=True)
class Knob:
    value: int = 1


class Remembers:
    """Keeps what it was configured with (as real plugins keep clients and settings)."""

    seen: int | None = None

    @hookimpl
    def agentd_config_sections(self):
        return [ConfigSection("knob", Knob)]

    @hookimpl
    def agentd_configure(self, config):
        self.seen = config.section("knob").value


class Refuses:
    @hookimpl
    def agentd_configure(self, config):
        if config.section("knob").value == 13:
            raise ConfigError("13 is unlucky", key="knob.value")


def test_a_rejected_reload_leaves_every_plugin_on_the_old_configuration(agentd_env):
    agentd_env.write_config("[knob]\nvalue = 2\n")
    remembers = Remembers()
    app = App.load(register={"remembers": remembers, "refuses": Refuses()}, load_entry_points=False)
    assert remembers.seen == 2

    agentd_env.write_config("[knob]\nvalue = 13\n")
    with pytest.raises(ConfigError, match="13 is unlucky"):
        app.reload()
    assert app.config.section("knob").value == 2
    assert remembers.seen == 2, "the plugin configured before the refusal must be put back"

    agentd_env.write_config("[knob]\nvalue = 3\n")
    app.reload()
    assert remembers.seen == 3 and app.config.section("knob").value == 3


def test_the_system_wide_file_is_found_when_the_user_has_none(agentd_env, monkeypatch, tmp_path):
    from agentd import config as config_mod
    from agentd import paths

    site = tmp_path / "etc-agentd"
    site.mkdir()
    (site / "agentd.toml").write_text("[knob]\nvalue = 7\n")
    monkeypatch.setattr(paths, "site_config_dir", lambda: site)
    assert config_mod.locate(None) == (site / "agentd.toml", False)
    user = paths.config_dir() / "agentd.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text("[knob]\nvalue = 8\n")
    assert config_mod.locate(None) == (user, False), "the user's own file comes first"
