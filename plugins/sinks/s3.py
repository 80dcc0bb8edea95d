"""The ``s3`` sink: each report as one object ``<prefix><report id>.json`` in an S3-compatible bucket.

Present = enabled (``[sinks.s3]`` with a ``bucket``). The object name is the report id,
so sending a report again overwrites the same object: stored once. Uses the AWS SDK
(boto3, the optional extra ``agentd[s3]``) in a worker thread, with its own connect and
read timeouts and few retries, under the spool's per-sink deadline. Credentials come
from the section (as secrets) or, when absent, from boto3's usual chain.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agentd import hookimpl
from agentd.config import Config, ConfigSection, Secret
from agentd.errors import ConfigError, DeliveryError
from agentd.model import Report


@dataclass(frozen=True)
class S3SinkSettings:
    """``[sinks.s3]``."""

    bucket: str = field(metadata={"help": "the bucket reports are written to"})
    prefix: str = field(default="reports/", metadata={"help": "object name prefix"})
    endpoint_url: str | None = field(default=None, metadata={"help": "an S3-compatible endpoint (MinIO, Ceph, ...); default AWS"})
    region: str | None = field(default=None, metadata={"help": "the bucket's region"})
    access_key_id: Secret | None = field(default=None, metadata={"help": "access key id (default: boto3's credential chain)"})
    secret_access_key: Secret | None = field(default=None, metadata={"help": "secret access key"})
    session_token: Secret | None = field(default=None, metadata={"help": "session token of temporary credentials"})
    timeout_s: float = field(default=10.0, metadata={"help": "connect and read timeout of one request", "min": 0.1, "max": 600})
    retries: int = field(default=2, metadata={"help": "the SDK's retries of one upload", "min": 0, "max": 10})


def _boto3() -> Any:
    try:
        import boto3  # noqa: PLC0415 - optional: only needed when [sinks.s3] is configured
    except ImportError:
        return None
    return boto3


class S3Sink:
    name = "s3"

    def __init__(self, settings: S3SinkSettings) -> None:
        self.settings = settings
        self._client: Any = None

    def key(self, report: Report) -> str:
        return f"{self.settings.prefix}{report.id}.json"

    def client(self) -> Any:
        if self._client is None:
            boto3 = _boto3()
            if boto3 is None:
                raise DeliveryError("the s3 sink needs boto3: pip install 'agentd[s3]'", retryable=False)
            from botocore.config import Config as BotoConfig

            s = self.settings
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region,
                aws_access_key_id=s.access_key_id.reveal() if s.access_key_id else None,
                aws_secret_access_key=s.secret_access_key.reveal() if s.secret_access_key else None,
                aws_session_token=s.session_token.reveal() if s.session_token else None,
                config=BotoConfig(
                    connect_timeout=s.timeout_s,
                    read_timeout=s.timeout_s,
                    retries={"max_attempts": s.retries + 1, "mode": "standard"},
                ),
            )
        return self._client

    async def deliver(self, report: Report, payload: bytes) -> None:
        await asyncio.to_thread(self._put, report, payload)

    def _put(self, report: Report, payload: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(report)
        try:
            self.client().put_object(
                Bucket=self.settings.bucket,
                Key=key,
                Body=payload,
                ContentType="application/json",
                Metadata={"idempotency-key": report.id},
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            retryable = status >= 500 or status in (0, 408, 429) or code in ("SlowDown", "RequestTimeout")
            raise DeliveryError(f"s3://{self.settings.bucket}/{key}: {code} {error.get('Message', '')}".strip(), retryable=retryable) from None
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, no credentials
            raise DeliveryError(f"s3://{self.settings.bucket}/{key}: {exc}") from None


@hookimpl
def agentd_config_sections():
    return [ConfigSection("sinks.s3", S3SinkSettings, "write reports to an S3-compatible bucket (present = enabled)", optional=True)]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: S3SinkSettings | None = config.section("sinks.s3")
    if settings is None:
        return
    file = str(config.path) if config.path else None
    if _boto3() is None:
        raise ConfigError("the s3 sink needs boto3, which is not installed: pip install 'agentd[s3]'", file=file, key="sinks.s3")
    if (settings.access_key_id is None) != (settings.secret_access_key is None):
        raise ConfigError("give both access_key_id and secret_access_key, or neither", file=file, key="sinks.s3")


@hookimpl
def agentd_collect_sinks(config: Config):
    settings: S3SinkSettings | None = config.section("sinks.s3")
    return [S3Sink(settings)] if settings is not None else []
