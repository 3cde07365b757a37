"""Users, buckets and policies of the local object store, as OSCAR v4.1 manages MinIO's.

- A user of the OIDC middleware gets a MinIO user of their own on first contact, whose keys
  `/system/config` then returns (`pkg/utils/auth/oidc.go` 163-182, `CreateMinIOUser`;
  `pkg/handlers/config.go` 51-113 `GetUserCredentials`). The Basic admin gets the admin's keys.
- `POST /system/buckets` makes a bucket with the admin's client, tags its owner and grants the
  owner every action on it through the owner's policy (`pkg/handlers/buckets/create_bucket.go`,
  `pkg/utils/minio.go` `CreateS3Path`, `createBucket`, `SetPolicies`, `CreateAddPolicy`); a name
  that exists (anyone's) is 400 "Error creating bucket with name ...". `GET /system/buckets`
  lists the caller's own buckets (`list_bucket.go`).

The local OSCAR keeps nothing of this on disk: the object store lives as long as the server.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from .object_store import ObjectStoreConfig
from .services import ApiError

ALL_ACTIONS = ["s3:*"]


class StorageAccounts:
    """The local OSCAR's MinIO admin client (IAM and S3 with the admin's keys)."""

    def __init__(self, config: ObjectStoreConfig) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        options: dict[str, Any] = {
            "endpoint_url": config.endpoint,
            "aws_access_key_id": config.access_key,
            "aws_secret_access_key": config.secret_key,
            "region_name": config.region,
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        }
        self._iam = boto3.client("iam", **options)
        self._s3 = boto3.client("s3", **options)
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, str]] = {}  # uid -> (access key, secret key)
        self._owned: dict[str, list[str]] = {}  # uid -> buckets

    @staticmethod
    def _user_name(uid: str) -> str:
        # IAM user names allow [\w+=,.@-]: an OIDC sub such as alice@local is kept as it is.
        return "".join(c if c.isalnum() or c in "+=,.@-_" else "_" for c in uid)[:64]

    def provider(self, uid: str | None) -> dict[str, Any]:
        """`minio_provider` of `/system/config`: the user's own keys, the admin's for None."""
        if uid is None:
            access_key, secret_key = self.config.access_key, self.config.secret_key
        else:
            access_key, secret_key = self.credentials(uid)
        return {
            "endpoint": self.config.endpoint,
            "verify": True,
            "access_key": access_key,
            "secret_key": secret_key,
            "region": self.config.region,
        }

    def credentials(self, uid: str) -> tuple[str, str]:
        """The user's keys, the user made on first call (`CreateMinIOUser`)."""
        with self._lock:
            if uid not in self._keys:
                name = self._user_name(uid)
                self._iam.create_user(UserName=name)
                key = self._iam.create_access_key(UserName=name)["AccessKey"]
                self._keys[uid] = (key["AccessKeyId"], key["SecretAccessKey"])
                self._owned[uid] = []
            return self._keys[uid]

    def create_bucket(self, body: bytes, uid: str | None) -> None:
        """`POST /system/buckets` for `uid` (None: the Basic admin)."""
        try:
            document = json.loads(body or b"{}")
            name = str(document.get("bucket_name") or "").strip(" /").split("/", 1)[0]
        except (ValueError, AttributeError) as error:
            raise ApiError(400, f"The Bucket specification is not valid: {error}") from None
        if not name:
            raise ApiError(400, "The Bucket specification is not valid: no bucket_name")
        if str(document.get("visibility") or "private").lower() != "private":
            raise ApiError(400, "the local OSCAR makes private buckets only")
        owner = uid or "oscar"
        with self._lock:
            self._create_bucket(name)
        self._s3.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": [{"Key": "owner", "Value": owner}]}
        )
        if uid is not None:
            self.credentials(uid)
            with self._lock:
                self._owned[uid].append(name)
                self._write_policy(uid)

    def _create_bucket(self, name: str) -> None:
        # All buckets belong to the admin's account: moto (like S3 in us-east-1) answers 200
        # to a create of an existing one, where MinIO says it exists.
        existing = {b["Name"] for b in self._s3.list_buckets().get("Buckets", [])}
        if name in existing:
            raise ApiError(
                400,
                f"Error creating bucket with name '{name}': the bucket \"{name}\" already exists\n",
            )
        try:
            self._s3.create_bucket(Bucket=name)
        except self._s3.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            reason = (
                f'the bucket "{name}" already exists\n'
                if code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou")
                else f"error creating bucket {name}: {code}"
            )
            raise ApiError(400, f"Error creating bucket with name '{name}': {reason}") from None

    def _write_policy(self, uid: str) -> None:
        buckets = self._owned[uid]
        resources = [f"arn:aws:s3:::{b}" for b in buckets] + [
            f"arn:aws:s3:::{b}/*" for b in buckets
        ]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ALL_ACTIONS, "Resource": resources}],
        }
        self._iam.put_user_policy(
            UserName=self._user_name(uid),
            PolicyName="oscar-buckets",
            PolicyDocument=json.dumps(policy),
        )

    def list_buckets(self, uid: str | None) -> list[dict[str, Any]]:
        """`GET /system/buckets`: the caller's own buckets (the admin: all)."""
        found = []
        for bucket in self._s3.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            try:
                tags = self._s3.get_bucket_tagging(Bucket=name).get("TagSet", [])
            except self._s3.exceptions.ClientError:
                tags = []
            owner = next((t["Value"] for t in tags if t["Key"] == "owner"), "")
            if uid is None or owner == uid:
                found.append(
                    {
                        "bucket_name": name,
                        "visibility": "private",
                        "allowed_users": [],
                        "owner": owner,
                        "metadata": {},
                    }
                )
        return found
