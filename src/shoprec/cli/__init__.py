"""The `shoprec` command: each subcommand is a few lines over a library function.

The commands live in one module per group (`pipeline`, `models`, `serving`, `monitoring`),
with the shared options in `options` and the summary tables in `summary`; this module is
the group and the entry point. Pipelines are imported inside the commands that run them, so
the library itself never imports KFP; errors become one clear line and an exit code.
"""

from __future__ import annotations

import sys

import click

from shoprec.cli import churn, churn_run, models, monitoring, pipeline, serving
from shoprec.errors import ShoprecError


@click.group()
@click.version_option(package_name="shoprec")
def cli() -> None:
    """shoprec: e-commerce recommendations on Kubeflow and KServe, or on this machine."""


for _command in (pipeline.run, pipeline.validate, pipeline.compile_command, pipeline.submit,
                 models.models,
                 serving.serve, serving.recommend, serving.events, serving.demo,
                 monitoring.drift, monitoring.reports, churn.churn, churn_run.churn_run):
    cli.add_command(_command)


def main() -> None:
    """Console entry point: library errors become one line on stderr and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ShoprecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
