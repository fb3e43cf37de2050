"""``kamiwaza run``: pull and serve if needed, then chat (interactive) or answer once.

With PROMPT words, or when stdin is not a terminal, it answers once and exits;
otherwise it opens the REPL. Pull and deploy progress always go to stderr. A base model
(no chat template, not instruction-tuned: ``workflows.is_base_model``) runs as text
completion: a one-shot prompt is sent as text, a chat as a "User: / Assistant:" transcript.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import config as settings
from .. import workflows
from ..errors import EXIT_INTERRUPTED, KamiwazaError, UsageError
from . import completion, output
from .connection import connect
from .serving import context_option, run_serve


@click.command()
@click.argument("model", shell_complete=completion.complete_models)
@click.argument("prompt", nargs=-1)
@click.option("--system", help="System prompt (default: 'You are a helpful AI assistant.').")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest reply, in tokens (default 1024).")
@click.option("--seed", type=int, help="Sampling seed, for repeatable replies.")
@click.option("--verbose", "-v", is_flag=True, help="After each reply, print timings and token counts on stderr.")
@click.option(
    "--load",
    "load_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Resume a conversation saved with /save.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A picture sent with the (first) message, for vision models (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="One-shot: print one JSON object (reply, tokens, timings).")
@context_option
@click.pass_context
def run(
    ctx: click.Context,
    model: str,
    prompt: tuple[str, ...],
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
    verbose: bool,
    load_file: Path | None,
    images: tuple[Path, ...],
    as_json: bool,
    context: int | None,
) -> None:
    """Chat with MODEL (pulling and serving it first if needed), or answer PROMPT once.

    \b
    Examples:
      kamiwaza run qwen2.5-0.5b-instruct
      kamiwaza run qwen2.5-0.5b-instruct "Why is the sky blue?"
      git diff | kamiwaza run qwen2.5-7b-instruct "Write a commit message for this diff"
      kamiwaza run gemma3-4b --image photo.jpg "What is in this picture?"
    """
    from ..chat.session import DEFAULT_SYSTEM, ChatSession, EndpointDown, TranscriptError, read_transcript

    out = output.of(ctx)
    stdin_text = "" if out.env.stdin_isatty else out.env.stdin.read()
    one_shot = bool(prompt) or not out.env.stdin_isatty
    if as_json and not one_shot:
        raise UsageError("--json needs a PROMPT or text on stdin (it answers once)")
    if one_shot:
        from ..chat.oneshot import compose_prompt

        question = compose_prompt(stdin_text, prompt)
        if not question:
            raise UsageError(
                "nothing to ask: give a PROMPT or pipe text on stdin", hint=f'e.g.: kamiwaza run {model} "Hello"'
            )

    transcript = None
    if load_file is not None:  # read before anything is pulled or deployed: a typo must cost nothing
        try:
            transcript = read_transcript(load_file)
        except TranscriptError as exc:
            raise UsageError(str(exc), hint="save one from the chat with: /save FILE") from exc

    pictures = []
    if images:  # read before anything is pulled or deployed, like --load
        from ..chat.images import ImageError, image_part

        try:
            pictures = [(p.name, image_part(p)) for p in images]
        except ImageError as exc:
            raise UsageError(str(exc)) from exc

    platform = connect(ctx)
    deployed = run_serve(out, platform, model, context=context)

    def client_for(dep: workflows.Deployed) -> object:
        return platform.openai_client(dep.deployment)

    base = workflows.is_base_model(platform, deployed)
    if base:
        out.info(
            f"ℹ {deployed.name} is a base model (no chat template): running it in completion mode, "
            + ("the prompt as text" if one_shot else 'the chat as a "User: / Assistant:" transcript')
        )
    session = ChatSession(
        model=deployed.name,
        client=client_for(deployed),
        # A base model answering once gets the prompt as it was written, with a system prompt only if asked.
        system="" if base and one_shot else DEFAULT_SYSTEM,
        verbose=verbose,
        info={
            "deployment": deployed.deployment.id,
            "endpoint": deployed.endpoint,
            "engine": deployed.deployment.engine,
            "mode": ("text" if one_shot else "transcript") if base else "chat",
            "context": f"{deployed.deployment.context_per_slot or '?'} tokens",
        },
        mode=("text" if one_shot else "transcript") if base else "chat",
        context=deployed.deployment.context_per_slot,
    )
    session.images.extend(pictures)
    if transcript is not None:
        session.restore(transcript)
    if system is not None:
        session.system = system
    if temperature is not None:
        session.temperature = temperature
    if max_tokens is not None:
        session.max_tokens = max_tokens
    if seed is not None:
        session.seed = seed

    if one_shot:
        from ..chat.oneshot import answer
        from ..chat.repl import format_stats

        try:
            reply = answer(session, question, as_json=as_json, out=out.env.stdout)
        except EndpointDown as exc:
            raise KamiwazaError(f"{exc}", hint=f"run it again to redeploy: kamiwaza run {model}") from exc
        if reply.interrupted:
            ctx.exit(EXIT_INTERRUPTED)
        if as_json:
            out.json(
                {
                    "model": deployed.name,
                    "deployment_id": deployed.deployment.id,
                    "endpoint": deployed.endpoint,
                    **reply.as_dict(),
                }
            )
        if verbose:
            out.info(format_stats(reply))
        return

    from ..chat.repl import Repl

    def reconnect() -> object:
        nonlocal deployed
        deployed = run_serve(out, platform, model, context=context)
        return client_for(deployed)

    def set_context(tokens: int) -> object:
        """/set num_ctx: a deployment with that context (made or reused; later redeploys keep it), as
        ollama reloads a model; one this chat started before is stopped (one it found running is not)."""
        nonlocal context, deployed
        new = run_serve(out, platform, model, context=tokens)
        if not deployed.reused and deployed.deployment.id != new.deployment.id:
            platform.stop(deployed.deployment.id)
        deployed, context = new, tokens
        session.info.update(
            deployment=new.deployment.id, endpoint=new.endpoint, context=f"{new.deployment.context_per_slot} tokens"
        )
        session.resize(new.deployment.context_per_slot)
        return client_for(new)

    history = settings.home() / "history" if settings.history_enabled() else None
    ctx.exit(Repl(session, history_file=history, reconnect=reconnect, set_context=set_context).run())
