"""`wuremote completion bash|zsh`: a completion script built from the parser itself, so it cannot drift
from the commands and options it completes."""

from __future__ import annotations

import argparse


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each subcommand and its options (long and short), from the parser."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse has no public walk of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sorted(opt for a in sub._actions for opt in a.option_strings)
    return found


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    commands = _commands(parser)
    top = " ".join(sorted(commands) + ["--help", "--version"])
    if shell == "bash":
        cases = "\n".join(f'        {name}) opts="{" ".join(options)}" ;;' for name, options in commands.items())
        return f"""# bash completion for wuremote: eval "$(wuremote completion bash)" (e.g. in ~/.bashrc)
_wuremote() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{top}" -- "$cur")); return
    fi
    case "$prev" in
        -i|--inventory|--ca-file|--state-dir|--out) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "${{COMP_WORDS[1]}}" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -F _wuremote wuremote"""
    cases = "\n".join(f"    {name}) _values 'option' {' '.join(repr(o) for o in options)} ;;"
                      for name, options in commands.items())
    return f"""#compdef wuremote
# zsh completion for wuremote: eval "$(wuremote completion zsh)" (e.g. in ~/.zshrc, after compinit)
_wuremote() {{
  if (( CURRENT == 2 )); then
    _values 'command' {' '.join(sorted(commands))}
    return
  fi
  if [[ $words[CURRENT] != -* ]]; then _files; return; fi
  case $words[2] in
{cases}
  esac
}}
compdef _wuremote wuremote"""
