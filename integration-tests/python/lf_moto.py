"""moto's S3 server (`moto_server`) with atomic conditional writes, for the tests.

moto 5.2.5 answers `PUT` with `If-None-Match: *` / `If-Match` by checking the key
(`get_object`) and storing the object later in the same handler, without a lock, in a
threaded server: two concurrent creates of one key both succeed and the later overwrites
the earlier. Lance commits a version by exactly such a create (`_versions/N.manifest`), so
a table maintained while it is written (the indexer committing as an append does) could
lose an acknowledged commit on moto — found as an append missing from
test_indexer.py, where the append and an index optimisation were both told they committed
version 346. S3 itself makes conditional writes atomic. This wrapper serialises moto's
object `PUT` handler and then runs moto's own server:

    python lf_moto.py -H 127.0.0.1 -p PORT
"""

import threading

from moto.s3.responses import S3Response
from moto.server import main

_WRITES = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self, *args, **kwargs):
    with _WRITES:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object

if __name__ == "__main__":
    main()
