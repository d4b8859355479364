"""Kind detection: which commands touch shared state that must not be done twice at once.

git operations that write history, database migrations and deployments run one at a time,
in declared order. Detection reads the command text; an explicit `kind` always wins.
"""

from __future__ import annotations

import functools
import re
import shlex
from enum import StrEnum


class Kind(StrEnum):
    AUTO = "auto"
    NORMAL = "normal"
    GIT = "git"
    DATABASE = "database"
    DEPLOY = "deploy"


SERIAL_KINDS = (Kind.GIT, Kind.DATABASE, Kind.DEPLOY)

_GIT_VERBS = "commit|push|merge|rebase|tag|cherry-pick|revert|am|reset|pull|fetch"
_PATTERNS = (
    (Kind.GIT, "runs git {0}", rf"\bgit\s+(?:-\S+\s+(?:\S+\s+)?)*({_GIT_VERBS})\b"),
    (Kind.DATABASE, "runs alembic {0}", r"\balembic\b.*\b(upgrade|downgrade|stamp)\b"),
    (Kind.DATABASE, "runs a Django {0}", r"\bmanage\.py\s+(migrate|flush|loaddata)\b"),
    (Kind.DATABASE, "runs {0} migrations", r"\b(flyway|liquibase)\b"),
    (Kind.DATABASE, "runs {0}", r"\b(prisma\s+(?:migrate|db\s+push))\b"),
    (Kind.DATABASE, "runs {0}", r"\b(rake\s+db:\S+|rails\s+db:\S+)"),
    (Kind.DATABASE, "runs {0} with an SQL file",
     r"\b(psql|mysql|sqlite3)\b.*(?:\s-f\s|\s<\s*\S+\.sql|\.sql\b)"),
    (Kind.DATABASE, "runs {0}",
     r"\b(knex\s+migrate\S*|sequelize\s+db:migrate|goose\s+up|migrate\s+-path)"),
    (Kind.DEPLOY, "runs {0}", r"\b(kubectl\s+(?:apply|delete|rollout|set|scale|replace|patch))\b"),
    (Kind.DEPLOY, "runs {0}", r"\b(helm\s+(?:upgrade|install|uninstall|rollback))\b"),
    (Kind.DEPLOY, "runs {0}", r"\b(terraform\s+(?:apply|destroy)|tofu\s+(?:apply|destroy))\b"),
    (Kind.DEPLOY, "runs {0}", r"\b(docker\s+push|docker\s+stack\s+deploy|docker\s+compose\s+up)\b"),
    (Kind.DEPLOY, "runs {0}", r"\b(ansible-playbook|pulumi\s+up|serverless\s+deploy|fly\s+deploy"
     r"|vercel\s+deploy|cdk\s+deploy|gcloud\s+\S+\s+deploy|aws\s+\S+\s+deploy)\b"),
)


@functools.cache
def _rules() -> tuple[tuple[Kind, str, re.Pattern[str]], ...]:
    """The patterns compiled, once, when a command is first read: not at import (~1 ms), since
    a cached tasks file (`plan`, `run`) and the settings (`status`) detect nothing."""
    return tuple((kind, reason, re.compile(pattern)) for kind, reason, pattern in _PATTERNS)


def command_text(cmd: str | list[str] | tuple[str, ...]) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def detect(cmd: str | list[str] | tuple[str, ...] | None) -> tuple[Kind, str]:
    """The kind of a command and why, e.g. (Kind.GIT, 'runs git push')."""
    if cmd is None:
        return Kind.NORMAL, "a Python callable"
    text = command_text(cmd)
    for kind, reason, pattern in _rules():
        match = pattern.search(text)
        if match:
            return kind, reason.format(" ".join(match.group(1).split()))
    return Kind.NORMAL, "no git, database or deploy command found"
