"""One checkpoint file streamed to S3 in PART_SIZE parts (a multipart upload when it has
more than one), with the CRC32 of each part that the manifest records."""

from __future__ import annotations

import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from embedding.manifest import PART_SIZE, FileEntry

IN_FLIGHT = 4  # parts uploading at once: bounds the memory to IN_FLIGHT x PART_SIZE


class S3File:
    def __init__(self, s3, bucket: str, prefix: str, key: str, pool: ThreadPoolExecutor):
        self.s3, self.bucket, self.key, self.relative = s3, bucket, prefix + key, key
        self.pool = pool
        self.buffer = bytearray()
        self.size = 0
        self.crcs: list[int] = []
        self.upload_id: str | None = None
        self.parts: list[Future] = []

    def write(self, data) -> None:
        self.buffer += memoryview(data).cast("B")
        while len(self.buffer) >= PART_SIZE:
            part = bytes(self.buffer[:PART_SIZE])
            del self.buffer[:PART_SIZE]
            self._part(part)

    def _part(self, data: bytes) -> None:
        self.crcs.append(zlib.crc32(data))
        self.size += len(data)
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.crcs)
        if len([p for p in self.parts if not p.done()]) >= IN_FLIGHT:
            next(p for p in self.parts if not p.done()).result()
        self.parts.append(self.pool.submit(
            self.s3.upload_part, Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
            PartNumber=number, Body=data))

    def close(self) -> FileEntry:
        if self.upload_id is None:  # one part: a plain PUT
            data = bytes(self.buffer)
            self.crcs, self.size = [zlib.crc32(data)], len(data)
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=data)
        else:
            if self.buffer:
                self._part(bytes(self.buffer))
            etags = [p.result()["ETag"] for p in self.parts]
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": [{"ETag": e, "PartNumber": i + 1}
                                           for i, e in enumerate(etags)]})
        return FileEntry(key=self.relative, size=self.size, part_crc32=self.crcs)

    def abort(self) -> None:
        if self.upload_id is not None:
            for part in self.parts:
                part.exception()
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                           UploadId=self.upload_id)
