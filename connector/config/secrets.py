"""Where a peer's BTP secret comes from: the environment, a file, or (only when the
operator says so explicitly) the configuration file itself.

Secrets do not belong in a configuration file that is copied, committed and shown in
support tickets, so a literal `secret:` is refused unless `allow_plaintext_secret: true`
sits next to it, and even then it is logged as a warning.  The resolved value never
appears in an error message, a warning or a `repr`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from .fields import Fields

SOURCES = ("secret_env", "secret_file", "secret")
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def resolve_secret(btp: Fields, env: Mapping[str, str], base_dir: str) -> tuple[str | None, str]:
    """(secret, description of its source) for one peer's `btp` section; (None, "") on a problem."""
    given = [key for key in SOURCES if btp.has(key)]
    allow_plaintext = btp.boolean("allow_plaintext_secret", False)
    for key in SOURCES:
        btp.value(key, "")  # mark as known, whichever is used
    if len(given) != 1:
        btp.fail("secret_env", "give exactly one of secret_env, secret_file or secret"
                 + (f" (got {', '.join(given)})" if given else ""))
        return None, ""
    source = given[0]
    if source == "secret_env":
        return _from_env(btp, env)
    if source == "secret_file":
        return _from_file(btp, base_dir)
    return _plaintext(btp, allow_plaintext)


def _from_env(btp: Fields, env: Mapping[str, str]) -> tuple[str | None, str]:
    name = btp.string("secret_env", pattern=ENV_NAME, describe="an environment variable name")
    if name is None:
        return None, ""
    secret = env.get(name)
    if not secret:
        btp.fail("secret_env", f"environment variable {name} is {'empty' if secret == '' else 'not set'}")
        return None, ""
    return secret, f"env:{name}"


def _from_file(btp: Fields, base_dir: str) -> tuple[str | None, str]:
    given = btp.string("secret_file")
    if given is None:
        return None, ""
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(given)))
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        btp.fail("secret_file", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        return None, ""
    if not secret:
        btp.fail("secret_file", f"{path} is empty")
        return None, ""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        btp.problems.warn(btp.at("secret_file"), f"{path} is accessible by group or others "
                          f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return secret, f"file:{path}"


def _plaintext(btp: Fields, allowed: bool | None) -> tuple[str | None, str]:
    if not allowed:
        btp.value("secret")
        btp.fail("secret", "a plaintext secret in the configuration is refused; use secret_env or "
                 "secret_file, or set allow_plaintext_secret: true to accept the risk")
        return None, ""
    raw = btp.value("secret")
    if not isinstance(raw, str) or not raw:
        btp.fail("secret", "must be a non-empty string")  # no value in the message: it is a secret
        return None, ""
    btp.problems.warn(btp.at("secret"), "plaintext secret in the configuration (allow_plaintext_secret: true)")
    return raw, "plaintext"
