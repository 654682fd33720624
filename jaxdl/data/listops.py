"""Offline ListOps, the Long Range Arena task (Tay et al., "Long Range Arena", ICLR 2021, Sec. 3.1;
Nangia & Bowman, "ListOps", 2018), generated with the LRA grammar instead of downloaded.

Grammar: a node is an operator with probability 1/4 (always a digit at max_depth), otherwise a digit
0-9; an operator [MIN, [MAX, [MED (int of the median) or [SM (sum mod 10) takes 2..max_args
arguments and closes with "]". The label (10 classes) is the value of the expression. LRA keeps
distinct expressions with 500 < tokens < 2000; the bounds are arguments here so that CPU examples can
use short sequences.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["LISTOPS_VOCAB", "generate_listops", "evaluate_listops"]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
LISTOPS_VOCAB = ("<pad>", *[str(d) for d in range(10)], *OPERATORS, "]")
_TOKEN_ID = {token: i for i, token in enumerate(LISTOPS_VOCAB)}
_OPERATOR_VALUE = 0.25


def _apply(operator: str, args: list[int]) -> int:
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[MED":
        return int(np.median(args))
    return sum(args) % 10


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, out: list[str], limit: int) -> int:
    """Append the tokens of a random expression to `out` and return its value.

    Stops early (raising _TooLong) once `limit` tokens are reached: such trees are rejected anyway,
    and the grammar is supercritical, so finishing them can take very long.
    """
    if len(out) >= limit:
        raise _TooLong
    if depth < max_depth and rng.random() < _OPERATOR_VALUE:
        operator = rng.choice(OPERATORS)
        out.append(operator)
        num_args = rng.randint(2, max_args)
        args = [_tree(rng, depth + 1, max_depth, max_args, out, limit) for _ in range(num_args)]
        out.append("]")
        return _apply(operator, args)
    value = rng.randrange(10)
    out.append(str(value))
    return value


def evaluate_listops(tokens) -> int:
    """Value of a token sequence (strings or vocabulary ids; padding ignored), by a stack machine.

    >>> evaluate_listops("[MAX 2 9 [MIN 4 7 ] 0 ]".split())
    9
    """
    stack: list = []
    for token in tokens:
        token = LISTOPS_VOCAB[token] if not isinstance(token, str) else token
        if token == "<pad>":
            continue
        if token == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            stack.append(_apply(stack.pop(), args[::-1]))
        else:
            stack.append(token if token in OPERATORS else int(token))
    if len(stack) != 1:
        raise ValueError("tokens do not form one complete expression")
    return stack[0]


def generate_listops(
    num_examples: int,
    *,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
) -> dict[str, np.ndarray]:
    """Distinct random ListOps expressions with min_length < tokens < max_length (LRA defaults).

    Args:
      num_examples: how many expressions.
      seed: seed; the same seed gives the same dataset.
      min_length, max_length: exclusive bounds on the token count.
      max_depth: maximum nesting depth.
      max_args: maximum arguments per operator.

    Returns:
      dict with "tokens" int32 (num_examples, max_length - 1) padded with 0 (`LISTOPS_VOCAB`),
      "lengths" int32 (num_examples,), "labels" int32 (num_examples,) in 0..9.

    >>> data = generate_listops(4, min_length=10, max_length=40, seed=1)
    >>> data["tokens"].shape, bool(data["labels"].max() < 10)
    ((4, 39), True)
    """
    if not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if not 1 <= min_length + 1 < max_length:
        raise ValueError(f"need 0 <= min_length < max_length - 1, got {min_length}, {max_length}")
    if max_args < 2 or max_depth < 1:
        raise ValueError(f"need max_args >= 2 and max_depth >= 1, got {max_args}, {max_depth}")
    rng = random.Random(seed)  # the stdlib generator is several times faster per draw here
    seen: set[tuple[str, ...]] = set()
    tokens = np.zeros((num_examples, max_length - 1), np.int32)
    lengths = np.zeros(num_examples, np.int32)
    labels = np.zeros(num_examples, np.int32)
    count = 0
    while count < num_examples:
        out: list[str] = []
        try:
            value = _tree(rng, 1, max_depth, max_args, out, max_length)
        except _TooLong:
            continue
        key = tuple(out)
        if not min_length < len(out) < max_length or key in seen:
            continue
        seen.add(key)
        tokens[count, : len(out)] = [_TOKEN_ID[t] for t in out]
        lengths[count], labels[count] = len(out), value
        count += 1
    return {"tokens": tokens, "lengths": lengths, "labels": labels}
