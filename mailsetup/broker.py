"""kombu's filesystem transport (the embedded broker of `make run`), with each message
written whole before a worker can see it.

kombu 5.x's `_put` creates the message file under its final name and writes it after;
a worker listing the folder in between moves it away and reads it empty, and the
JSONDecodeError stops the worker's consumer for good ("Unrecoverable error"): seen with
beat sending its tasks at start. Here the message is written under a name the listing
skips and renamed into place (a rename within one folder is atomic).
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # `_get` takes only names whose part after the first dot is "<queue>.msg".
        partial = os.path.join(self.data_folder_out, f"writing-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as error:
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    """Make "filesystem://" this transport (before Celery opens a connection)."""
    TRANSPORT_ALIASES["filesystem"] = "mailsetup.broker:Transport"
