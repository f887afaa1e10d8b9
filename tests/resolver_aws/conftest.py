"""The local AWS fixtures (tests/support/aws.py) for this directory only."""

from tests.support.aws import aws_stack, container, moto_server, rekognition_server  # noqa: F401
