"""Port counters, polled from every switch, turned into rates (the web view colours links
by them). A separate os-ken application: it only reads, so every member of a cluster
may run it, and it keeps the main adapter to its one concern."""

from __future__ import annotations

import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

POLL_INTERVAL = 2.0  # seconds between port statistics requests


class PortStats(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.datapaths: dict[int, object] = {}
        self.rates: dict[tuple[int, int], float] = {}  # (dpid, port) -> bits/s sent
        self._last: dict[tuple[int, int], tuple[int, float]] = {}  # tx bytes, when
        self.threads.append(hub.spawn(self._poll))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _on_state(self, ev) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER and dp.id is not None:
            self.datapaths[dp.id] = dp
        elif dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            for key in [k for k in self.rates if k[0] == dp.id]:
                self.rates.pop(key, None)
                self._last.pop(key, None)

    def _poll(self) -> None:
        while True:
            hub.sleep(POLL_INTERVAL)
            for dp in list(self.datapaths.values()):
                dp.send_msg(dp.ofproto_parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY))

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def _on_stats(self, ev) -> None:
        dpid, now = ev.msg.datapath.id, time.monotonic()
        for stat in ev.msg.body:
            if stat.port_no > ofp.OFPP_MAX:
                continue
            key = (dpid, stat.port_no)
            last = self._last.get(key)
            if last is not None and now > last[1] and stat.tx_bytes >= last[0]:
                self.rates[key] = 8 * (stat.tx_bytes - last[0]) / (now - last[1])
            self._last[key] = (stat.tx_bytes, now)

    def link_rate(self, a: int, a_port: int, b: int, b_port: int) -> float:
        """Bits/s over a link, the busier direction."""
        return max(self.rates.get((a, a_port), 0.0), self.rates.get((b, b_port), 0.0))
