"""``bananas es-init``: install (or update) the ILM policy and the index template, idempotently.

Both are ``PUT`` requests that replace what is there, so running it again is harmless and picks up a new mapping.
An unreachable or refusing cluster is one line on stderr and exit status 1; a bad setting is the usual one-line
configuration error (exit 2).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from elasticsearch import ApiError, TransportError

from bananas.plugin_api import Bananas
from bananas_elasticsearch.templates import ilm_policy, index_pattern, index_template, policy_name

__all__ = ["es_init", "install"]


def install(client: Any, prefix: str) -> dict[str, Any]:
    """PUT the policy, then the template that names it; return what was installed."""
    client.ilm.put_lifecycle(name=policy_name(prefix), policy=ilm_policy())
    client.indices.put_index_template(name=prefix, **index_template(prefix))
    return {"policy": policy_name(prefix), "template": prefix, "index_patterns": [index_pattern(prefix)]}


def _where(options: dict[str, Any]) -> str:
    if options.get("cloud_id"):
        return f"Elastic Cloud deployment {str(options['cloud_id']).partition(':')[0]}"
    return ", ".join(options.get("addresses") or ())


@click.command("es-init")
@click.option("--print", "show", is_flag=True, help="Print the ILM policy and index template as JSON; send nothing.")
@click.pass_context
def es_init(ctx: click.Context, show: bool) -> None:
    """Install the log index template and ILM policy in Elasticsearch (LOG_ES_* settings)."""
    from bananas_elasticsearch import build_client

    settings = Bananas(config=(ctx.obj or {}).get("config")).settings
    options = settings.table("logging.elasticsearch")
    prefix = str(options.get("index_prefix") or "bananas-logs")
    if show:
        click.echo(json.dumps({"policy": {policy_name(prefix): {"policy": ilm_policy()}},
                               "index_template": {prefix: index_template(prefix)}}, indent=2))
        return
    client = build_client(options, request_timeout=30.0)
    try:
        done = install(client, prefix)
    except ApiError as exc:
        reason = exc.body.get("error", {}).get("reason") if isinstance(exc.body, dict) else None
        click.echo(f"Error: Elasticsearch at {_where(options)} refused es-init: {exc.meta.status} "
                   f"{reason or exc.message}", err=True)
        sys.exit(1)
    except TransportError as exc:
        click.echo(f"Error: cannot reach Elasticsearch at {_where(options)}: {type(exc).__name__}: {exc.message}",
                   err=True)
        sys.exit(1)
    finally:
        client.close()
    click.echo(f"es-init: ILM policy {done['policy']} and index template {done['template']} "
               f"(indices {done['index_patterns'][0]}) installed on {_where(options)}")
