from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_PENDING: _ClassVar[Status]
    STATUS_SCHEDULED: _ClassVar[Status]
    STATUS_RUNNING: _ClassVar[Status]
    STATUS_COMPLETED: _ClassVar[Status]
    STATUS_FAILED: _ClassVar[Status]
    STATUS_RETRYING: _ClassVar[Status]
    STATUS_DEAD: _ClassVar[Status]
    STATUS_CANCELLED: _ClassVar[Status]
    STATUS_EXPIRED: _ClassVar[Status]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_NORMAL: Priority
PRIORITY_LOW: Priority
STATUS_UNSPECIFIED: Status
STATUS_PENDING: Status
STATUS_SCHEDULED: Status
STATUS_RUNNING: Status
STATUS_COMPLETED: Status
STATUS_FAILED: Status
STATUS_RETRYING: Status
STATUS_DEAD: Status
STATUS_CANCELLED: Status
STATUS_EXPIRED: Status

class Body(_message.Message):
    __slots__ = ("job", "json")
    JOB_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    job: Job
    json: bytes
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., json: _Optional[bytes] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "name", "payload", "priority", "status", "attempts", "max_retries", "timeout", "queue", "last_error", "traceback", "headers", "created_at", "enqueued_at", "scheduled_at", "started_at", "finished_at", "extra")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    payload: bytes
    priority: Priority
    status: Status
    attempts: int
    max_retries: int
    timeout: float
    queue: str
    last_error: str
    traceback: str
    headers: _containers.ScalarMap[str, str]
    created_at: float
    enqueued_at: float
    scheduled_at: float
    started_at: float
    finished_at: float
    extra: bytes
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[_Union[Priority, str]] = ..., status: _Optional[_Union[Status, str]] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., timeout: _Optional[float] = ..., queue: _Optional[str] = ..., last_error: _Optional[str] = ..., traceback: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[float] = ..., enqueued_at: _Optional[float] = ..., scheduled_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., extra: _Optional[bytes] = ...) -> None: ...
