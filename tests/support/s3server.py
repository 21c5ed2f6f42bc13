"""An S3-compatible server on 127.0.0.1 for the object-storage tests: moto's, over real HTTP.

One server per test session (moto keeps its buckets in memory); each test makes its own
bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "AKIATESTTRACKER0000001"
SECRET_ACCESS_KEY = "test-secret-access-key-ZZ9plural-alpha-0123"
REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        self.server.stop()

    def new_bucket(self) -> Bucket:
        name = f"tracker-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return Bucket(self, name)


@dataclass
class Bucket:
    server: S3Server
    name: str
    prefix: str = "videos"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def settings(self) -> dict[str, Any]:
        """Settings overrides that archive into this bucket."""
        return {
            "media_url": self.url,
            "aws_endpoint_url": self.server.endpoint,
            "aws_region": REGION,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
        }

    def env(self) -> dict[str, str]:
        return {
            "TRACKER_MEDIA_URL": self.url,
            "AWS_ENDPOINT_URL": self.server.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def keys(self) -> list[str]:
        listed = self.server.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, name: str) -> bytes:
        key = f"{self.prefix}/{name}"
        return self.server.client.get_object(Bucket=self.name, Key=key)["Body"].read()
