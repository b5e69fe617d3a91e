"""Typical SIP messages used by the parser benchmarks (an INVITE with SDP and its 200 OK)."""

SDP = (
    b"v=0\r\n"
    b"o=- 3842104920 3842104920 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:4001@192.0.2.20:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-12345-1-0;rport\r\n"
    b"From: \"Caller\" <sip:5551234@192.0.2.10:5060>;tag=12345SIPpTag001\r\n"
    b"To: <sip:4001@192.0.2.20:5060>\r\n"
    b"Call-ID: 1-12345@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:5551234@192.0.2.10:5060>\r\n"
    b"Max-Forwards: 70\r\n"
    b"User-Agent: SIPp\r\n"
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-12345-1-0;rport=5060;received=192.0.2.10\r\n"
    b"From: \"Caller\" <sip:5551234@192.0.2.10:5060>;tag=12345SIPpTag001\r\n"
    b"To: <sip:4001@192.0.2.20:5060>;tag=as5f3c2d1e\r\n"
    b"Call-ID: 1-12345@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:4001@192.0.2.20:5060>\r\n"
    b"Server: ctiengine\r\n"
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
