"""Does the configuration in force still allow what an incident waits to do?

An incident can wait across a change of ``agent.toml`` (a reload, or a restart with a new
file): an ask for a human's approval, a yes held back by a passing guardrail, or an action
decided alone and held back by a cooldown. What the operator changed wins from the next
cycle on:

- an action waiting for approval (or approved and not yet sent) is withdrawn, and the
  incident escalated with the reason, when the action is now ``never`` on its service,
  was removed from the service's ``actions``, or the service (or, for a related service,
  its relation) was removed;
- an action decided alone is not sent alone any more when any of that holds, or when its
  tier is no longer ``auto``, or when its finding rests on Alertmanager alone and
  ``[sweep] trust_alertmanager`` was turned off: the incident is escalated instead.

Pure: the finding, the action, the service it would run on and the configuration in; the
reason, or None, out.
"""

from __future__ import annotations

from agent.config import AgentConfig, autonomy_of
from agent.diagnosis.safety import allowed_targets
from agent.sweep.findings import Finding


def refused_ask(finding: Finding, action: str, target: str, config: AgentConfig) -> str | None:
    """Why ``config`` no longer allows asking a human for ``action`` on ``target``, or None."""
    if target not in config.services:
        return f"service {target} is no longer in [services]"
    if target not in allowed_targets(finding, config):
        return f"{target} is no longer a service {finding.target} may act on (services.*.related)"
    if action not in config.services[target].actions:
        return f"{action} is no longer allowed on {target} (services.{target}.actions)"
    if autonomy_of(config, target, action) == "never":
        return f"{action} on {target} is now set to autonomy 'never'"
    return None


def refused_alone(finding: Finding, action: str, target: str, config: AgentConfig) -> str | None:
    """Why ``config`` no longer lets ``action`` on ``target`` run without a human, or None."""
    refused = refused_ask(finding, action, target, config)
    if refused is not None:
        return refused
    tier = autonomy_of(config, target, action)
    if tier != "auto":
        return f"{action} on {target} now needs a human's approval (autonomy '{tier}')"
    catalogue = config.actions.get(action)
    changing = catalogue is not None and catalogue.mutating
    if changing and finding.source == "alertmanager" and not config.sweep.trust_alertmanager:
        return f"{action} on {target} rests on Alertmanager alone (sweep.trust_alertmanager)"
    return None
