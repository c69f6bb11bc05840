"""The host uplink (``[uplink] type = "host"``, the default): guests reach the outside through
the host's own sockets, with no privileges, no iptables rule and no ``ip_forward``.

Packets from guests come from the router (``Router.from_guest``) to ``HostEgress``
(``host.py``), which hands each protocol to its adapter: ``udp.py``, ``echo.py``, ``tcp.py``
(around the sans-I/O TCP translator ``nat.tcp_splice``), and ``forwards.py`` for ports the host
listens on.  UDP and echo flows are kept by the sans-I/O ``flows.FlowTable``; ``side.HostSide``
is what the adapters share.  What goes back to guests is handed to ``emit``, which addresses it
by the router's ARP cache.

Rule 1: UDP.  Each guest endpoint (address, port) is one host UDP socket, so the mapping is
        endpoint-independent (RFC 4787 REQ-1) because the socket's port is; the guest's port is
        kept when the host has it free and it is >= 1024 (REQ-3 allows either).  Filtering is
        address-dependent by default (REQ-8, ``[nat] filtering``): a datagram from a host the
        guest never sent to is dropped.  A mapping lives ``[nat] udp`` seconds after its last
        datagram (REQ-5).  Datagrams larger than the guest link's MTU are fragmented (RFC 791);
        fragments from guests are reassembled first (``nat.reassembly``: a socket sends whole
        datagrams only), for UDP, echo and TCP alike.
        ICMP errors the host receives for a guest's datagrams (IP_RECVERR) go on to the guest,
        and datagrams leave with the guest's TTL less our hop, so a UDP traceroute through the
        host uplink sees the routers beyond it.  IPv6 guests get ICMPv6 errors the same way
        (``v6`` Rule 7), and their TCP connects ICMPv6 unreachable (``v6`` Rule 5).
Rule 2: ICMP echo.  An unprivileged ping socket (SOCK_DGRAM, IPPROTO_ICMP) per guest (address,
        identifier) where ``net.ipv4.ping_group_range`` allows; else one raw ICMP socket shared by
        all, with an identifier of ours per guest echo flow (needs CAP_NET_RAW); else echo
        requests get ICMP 3/13 and one warning is logged at start.  As for UDP, requests carry
        the guest's TTL less our hop, and the errors they cause go on to the guest.
Rule 3: TCP.  A guest SYN starts a non-blocking connect; ``nat.tcp_splice.Splice`` carries the
        connection: SYN-ACK only once connected, RST when refused, ICMP unreachable otherwise;
        flow control both ways (the adapter reads the host socket only while ``room()`` > 0 and
        writes what the socket takes).  Segments from a guest are synced once per batch read
        (a ``call_soon`` after the port's read callback): one send to the host, one ACK back.
Rule 4: the host address (default: the gateway's, as libslirp and passt do) stands for the
        host's loopback: TCP and UDP to it go to 127.0.0.1; what comes from loopback or from an
        IPv6 peer appears to guests to come from it.  Destinations the router must never forward
        (0/8, 127/8, multicast, class E: RFC 1812 5.3.7) are dropped and counted.
Rule 5: forwards.  Each ``[[forward]]`` port is a listening host socket (IPv4 or IPv6 address),
        to an IPv4 guest or, when guests have IPv6, an IPv6 one.  An accepted TCP connection
        becomes a splice opened toward the guest; a UDP datagram is sent to the guest from its
        peer, and the guest's answers leave by the listening socket (a session, timed out like
        a UDP mapping).  How peers appear to guests: ``forwards.py``.
Rule 6: limits.  At most ``max_flows`` host sockets (the conntrack size, and the process's file
        limit); beyond it new flows are dropped, counted and answered with ICMP 3/13 (RFC 5508
        REQ-8), existing flows go on.  At most ``max_per_guest`` of them per guest address
        (UDP, echo and TCP, IPv4 and IPv6 addresses apart; ``flows.GuestQuota``): a guest at
        its quota is refused the same way (ICMPv6 1/1 for an IPv6 guest) and counted
        ``drop-guest-quota``, other guests go on.  Flows a forward opens toward a guest count
        for nobody: whoever floods the forward (another guest through the host, too) would
        else spend the guest's quota and cut it off.  When the file limit makes the table
        smaller than configured, the quota is at most a quarter of it.  TCP flows hold at most
        FLOW_BUFFER bytes each way, and all together about ``buffer_budget``: over it, every
        flow that syncs gets MIN_BUFFER (its windows narrow), until the total falls below it
        again.
"""

from nat.egress.frames import fragments
from nat.egress.host import HostEgress

__all__ = ["HostEgress", "fragments"]
