"""An association that ends while one of its C-STOREs is still being stored: what it held
back (its study, from completion) is let go, not kept for ever.

pynetdicom tells the end of the connection from its network thread, maybe while the handler
still stores (the study is then added back after it was let go), and the end of the
association from the association's own thread after its last handler: that second event lets
the study go.  These tests hold pynetdicom to it."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from tests.security.netnode import running_node

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("how", ["abort", "connection dropped"])
def test_a_peer_gone_mid_store_holds_no_study_back(tmp_path, how):
    with running_node(tmp_path) as node:
        receiver = node.receiver
        storing, aborted = threading.Event(), threading.Event()
        pseudonymize = receiver.pseudonymizer.pseudonymize

        def slow(ds):  # noqa: ANN001, ANN202 - the peer's abort arrives while this runs
            storing.set()
            assert aborted.wait(10)
            time.sleep(0.5)  # let the node's network thread see the close
            return pseudonymize(ds)

        receiver.pseudonymizer.pseudonymize = slow  # type: ignore[method-assign]
        ds = ct_series_datasets(phantom_chest_hu((1, 32, 32)))[0]
        ae = AE(ae_title="PACS")
        ae.dimse_timeout = 3  # its wait for the response it will never get
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established
        sender = threading.Thread(target=assoc.send_c_store, args=(ds,))
        sender.start()
        assert storing.wait(10)
        if how == "abort":
            assoc.abort()
        else:  # as if the peer crashed: no A-ABORT, the TCP connection just ends
            assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        aborted.set()
        sender.join(30)
        deadline = time.monotonic() + 10
        while node.stored() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.stored() == 1  # stored all the same: the data set was complete
        deadline = time.monotonic() + 10
        while receiver.busy_study_uids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.busy_study_uids() == set()
        assert receiver.open_associations() == set()
