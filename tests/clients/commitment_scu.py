#!/usr/bin/env python3
"""A Storage Commitment Push Model SCU (PS3.4 Annex J) for tramy's integration tests, with
pynetdicom: sends N-ACTION (Request Storage Commitment) and receives the N-EVENT-REPORT either on
the same association (--mode same) or, after releasing it at once, through an AE listening on
--listen (--mode release).

Prints one JSON document: the N-ACTION-RSP status, where the report came, its Event Type ID, the
committed SOP Instance UIDs and the failed ones with their Failure Reason.
"""
import argparse
import json
import socket
import threading

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


def report_of(event, where):
    info = event.event_information
    return {
        "where": where,
        "calling_ae_title": event.assoc.requestor.ae_title,
        "event_type": int(event.request.EventTypeID),
        "transaction_uid": str(info.TransactionUID),
        "committed": [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
        "failed": [
            [str(i.ReferencedSOPInstanceUID), int(i.FailureReason)]
            for i in info.get("FailedSOPSequence", [])
        ],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aet", default="MODALITY")
    p.add_argument("--mode", choices=["same", "release", "stray-report"], default="same")
    p.add_argument("--listen", type=int, default=0)
    p.add_argument("--ref", action="append", default=[], help="SOPClassUID:SOPInstanceUID")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()

    reports = []
    arrived = threading.Event()

    def on_report(event, where):
        reports.append(report_of(event, where))
        arrived.set()
        return 0x0000, None

    ae = AE(ae_title=a.aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    server = None
    if a.mode == "release":
        # tramy opens the reporting association proposing the SCP role (PS3.4 J.6).
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", a.listen),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report, ["new"])],
        )
    handlers = [(evt.EVT_N_EVENT_REPORT, on_report, ["same"])] if a.mode == "same" else []
    assoc = ae.associate("127.0.0.1", a.port, ae_title="TRAMY", evt_handlers=handlers)
    out = {"associated": assoc.is_established}
    if assoc.is_established and a.mode == "stray-report":
        # A report for a transaction tramy never asked about.
        ds = Dataset()
        ds.TransactionUID = generate_uid()
        status, _ = assoc.send_n_event_report(ds, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        out["report_status"] = int(status.Status) if "Status" in status else None
        out["error_comment"] = str(status.get("ErrorComment", ""))
        assoc.release()
        print(json.dumps(out))
        return
    if assoc.is_established:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ds = Dataset()
        ds.TransactionUID = generate_uid()
        items = []
        for ref in a.ref:
            cls, inst = ref.split(":", 1)
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = inst
            items.append(item)
        ds.ReferencedSOPSequence = items
        status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        out["transaction_uid"] = str(ds.TransactionUID)
        out["action_status"] = int(status.Status) if "Status" in status else None
        out["error_comment"] = str(status.get("ErrorComment", ""))
        if a.mode == "release":
            assoc.release()
        arrived.wait(a.timeout if out["action_status"] == 0 else 0)
        if assoc.is_established:
            assoc.release()
    out["reports"] = reports
    if server is not None:
        server.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
