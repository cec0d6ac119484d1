"""``python -m yoso_deploy.cli`` = the ``yoso-deploy`` command."""

from .main import main

main(prog_name="yoso-deploy")
