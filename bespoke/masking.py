"""Secrets: which arguments and values are credentials, and masking them in all bespoke prints or writes.

A credential is an argument whose name says so (token, key, secret, password) or a value shaped like
one (`hf_...`). The two sd-scripts flags that carry one are passed to the child by environment
instead (`to_env`), so the argv that is echoed, logged, hashed into the run's identity and written
to run.json/DONE.json never holds it. `mask_argv` and `mask_text` are the one masking rule for
everything else (status lines, log lines, the command echo).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
# "token" but not "tokenizer": BESPOKE_TOKENIZER_DIR and TOKENIZERS_PARALLELISM are settings, not credentials
_NAME = re.compile(r"token(?!iz)|key|secret|passw|credential|private", re.IGNORECASE)
# sd-scripts flags whose names contain "token" or "key" but hold counts, separators and paths.
NOT_SECRET = frozenset({"keep_tokens", "keep_tokens_separator", "max_token_length", "token_warmup_min",
                        "token_warmup_step", "tokenizer_cache_dir"})
# Not \b: "_" is a word character, and x_hf_... must be found too.
_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{8,}|api_org_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,})"
)
# sd-scripts reads these from the environment when the flag is not given (huggingface_hub: HF_TOKEN;
# wandb: WANDB_API_KEY), so the value never needs to be on the command line.
ENV_FOR_FLAG = {"huggingface_token": "HF_TOKEN", "wandb_api_key": "WANDB_API_KEY"}


def is_secret_name(name: str) -> bool:
    name = name.strip().lstrip("-").replace("-", "_")
    return name.lower() not in NOT_SECRET and bool(_NAME.search(name))


def looks_secret(value: str) -> bool:
    return bool(_VALUE.search(value))


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The values of environment variables that hold credentials (HF_TOKEN, WANDB_API_KEY...)."""
    return [v for k, v in environ.items() if v and len(v) >= 6 and is_secret_name(k)]


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret value and every credential-shaped value replaced by ***."""
    for s in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return _VALUE.sub(MASK, text)


def mask_argv(argv: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """argv with the value of every credential-named option (--x=V, --x V, --set x=V, X=V, and `--set x V`,
    a mistyped --set) masked."""
    secrets = list(secrets)
    out: list[str] = []
    hide_next, prev = False, ""
    for word in map(str, argv):
        name, eq, _value = word.partition("=")
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif eq and is_secret_name(name) and re.fullmatch(r"-{0,2}[A-Za-z_][\w.-]*", name):
            out.append(f"{name}={MASK}")
        elif not eq and (word.startswith("--") or prev == "--set") and is_secret_name(word):
            out.append(word)
            hide_next = True
        else:
            out.append(mask_text(word, secrets))
        prev = word
    return out


def argv_secrets(argv: Iterable[str]) -> list[str]:
    """The credential values mask_argv hides in argv, for text that quotes argv's words (click's errors)."""
    words = [str(w) for w in argv]
    return [w if m == MASK else w.partition("=")[2]
            for w, m in zip(words, mask_argv(words), strict=True) if m == MASK or m.endswith("=" + MASK) and m != w]


def mask_obj(obj, secrets: Iterable[str] = ()):
    """A JSON-able value with every string masked and every credential-named key's value masked."""
    secrets = list(secrets)
    if isinstance(obj, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) else mask_obj(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        masked = mask_argv([str(x) for x in obj], secrets) if all(isinstance(x, str) for x in obj) else \
            [mask_obj(x, secrets) for x in obj]
        return masked
    if isinstance(obj, str):
        return mask_text(obj, secrets)
    return obj


def to_env(args: dict[str, object]) -> tuple[dict[str, object], dict[str, str]]:
    """Move the credentials sd-scripts can read from the environment out of its arguments.

    Returns (arguments without them, environment to add). The run's identity is built from the
    arguments, so it does not depend on a token's value.
    """
    kept, env = {}, {}
    for name, value in args.items():
        if name in ENV_FOR_FLAG and isinstance(value, str):
            env[ENV_FOR_FLAG[name]] = value
        else:
            kept[name] = value
    return kept, env
