//! Cutting a client's byte stream into MQTT packets.
//!
//! The fixed header and the remaining length are read here, so that a frame is known to be
//! complete before any body parser sees it; rumqttc's parsers (`codec`) then get exactly that
//! frame. rumqttc's own `Packet::read` cannot do this for us: its property-length reader answers
//! "insufficient bytes" when a complete frame ends where a property length is due, which reads
//! as "wait for more data", although it has already consumed the frame. The connection would
//! then drop the packet silently and leave the packets behind it waiting for the client's next
//! write. Here a complete frame that does not parse is malformed, whatever the parser said.
//!
//! A few packets are read here rather than by rumqttc, which has no case for them: an MQTT 5
//! DISCONNECT with remaining length 0 or 1 (§3.14.2.1, §3.14.2.2.1; rumqttc's v5 reader refuses
//! every zero-length packet but the pings, and wants a property length after a reason code), and
//! AUTH, which its v5 reader does not know at all.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5::{self, Disconnect, DisconnectReasonCode, Packet};

use crate::codec::{self, CodecError, Version};

const CONNECT: u8 = 1;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// The fixed header of one packet: its first byte and the length of what follows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    byte1: u8,
    /// Bytes of the fixed header: the first byte and 1 to 4 of remaining length.
    len: usize,
    remaining: usize,
}

impl Header {
    fn kind(self) -> u8 {
        self.byte1 >> 4
    }

    fn flags(self) -> u8 {
        self.byte1 & 0x0F
    }

    /// The whole packet's size, fixed header included (what `mqtt.max_packet_size` limits).
    pub(crate) fn frame_len(self) -> usize {
        self.len + self.remaining
    }
}

/// Reads the fixed header at the head of `buf`; `Ok(None)` until all of it has arrived.
pub(crate) fn header(buf: &[u8]) -> Result<Option<Header>, CodecError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    // The remaining length is a variable byte integer of at most four bytes (§1.5.5).
    let mut remaining = 0;
    for (i, shift) in [0, 7, 14, 21].into_iter().enumerate() {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            // §1.5.5: the encoding uses as few bytes as possible, so a last byte of 0 after a
            // continuation is malformed.
            if i > 0 && byte == 0 {
                return Err(malformed("remaining length not minimally encoded"));
            }
            return Ok(Some(Header {
                byte1,
                len: 2 + i,
                remaining,
            }));
        }
    }
    Err(malformed("remaining length longer than four bytes"))
}

/// Takes the next complete frame off the head of `buf`. `Ok(None)`: not all of it has arrived,
/// and nothing was taken. A frame announcing more than `max` bytes is refused at once, before
/// its body is read.
pub(crate) fn next_frame(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Header, BytesMut)>, CodecError> {
    let Some(header) = header(buf)? else {
        return Ok(None);
    };
    if header.frame_len() > max {
        return Err(CodecError::TooLarge(max));
    }
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    Ok(Some((header, buf.split_to(header.frame_len()))))
}

/// Decodes the next packet of a connection speaking `version`, if `buf` holds all of it.
pub(crate) fn decode(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, CodecError> {
    match next_frame(buf, max)? {
        Some((header, frame)) => decode_frame(version, header, frame).map(Some),
        None => Ok(None),
    }
}

/// Decodes the first packet of a connection, which must be CONNECT: its protocol level decides
/// the version the connection speaks from then on.
pub(crate) fn decode_connect(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Version, Packet)>, CodecError> {
    // Said as soon as the first byte is here, rather than after a frame of any size.
    if buf.first().is_some_and(|byte| byte >> 4 != CONNECT) {
        return Err(CodecError::NotConnect);
    }
    let Some((header, frame)) = next_frame(buf, max)? else {
        return Ok(None);
    };
    let version = match protocol_level(&frame[header.len..]) {
        Some(4) => Version::V4,
        Some(5) => Version::V5,
        Some(level) => return Err(CodecError::UnsupportedVersion(level)),
        None => return Err(malformed("CONNECT ends before its protocol level")),
    };
    decode_frame(version, header, frame).map(|packet| Some((version, packet)))
}

/// The protocol level in a CONNECT's variable header: after the protocol name.
fn protocol_level(variable_header: &[u8]) -> Option<u8> {
    let name_len = u16::from_be_bytes([*variable_header.first()?, *variable_header.get(1)?]);
    variable_header.get(2 + usize::from(name_len)).copied()
}

/// Decodes one complete frame. It is all there, so whatever does not parse is malformed.
fn decode_frame(version: Version, header: Header, frame: BytesMut) -> Result<Packet, CodecError> {
    match (version, header.kind()) {
        // §3.12.1: a PINGREQ is its fixed header alone, flags 0.
        (_, PINGREQ) if header.remaining == 0 && header.flags() == 0 => {
            return Ok(Packet::PingReq(v5::PingReq));
        }
        (_, PINGREQ) => return Err(malformed("PINGREQ with a body or flags")),
        (Version::V5, DISCONNECT) if header.remaining <= 1 => {
            return short_disconnect(header, &frame);
        }
        (Version::V5, AUTH) => return Err(auth(header, frame)),
        _ => {}
    }
    let mut frame = frame;
    match version {
        Version::V5 => {
            v5::Packet::read(&mut frame, None).map_err(|err| malformed(&err.to_string()))
        }
        Version::V4 => match v4::Packet::read(&mut frame, usize::MAX) {
            Ok(packet) => codec::from_v4(packet),
            Err(err) => Err(malformed(&err.to_string())),
        },
    }
}

/// An MQTT 5 DISCONNECT of remaining length 0 (reason 0x00, no properties) or 1 (a reason code
/// and no property length, which means no properties).
fn short_disconnect(header: Header, frame: &[u8]) -> Result<Packet, CodecError> {
    if header.flags() != 0 {
        return Err(malformed("DISCONNECT with flags"));
    }
    let reason_code = match frame.get(header.len) {
        None => DisconnectReasonCode::NormalDisconnection,
        Some(&code) => DisconnectReasonCode::try_from(code)
            .map_err(|_| malformed("unknown DISCONNECT reason code"))?,
    };
    Ok(Packet::Disconnect(Disconnect {
        reason_code,
        properties: None,
    }))
}

/// AUTH, which the gateway does not offer: a protocol error if it is well formed (remaining
/// length 0 means reason 0x00 and no properties, §3.15.2.1), malformed otherwise.
fn auth(header: Header, frame: BytesMut) -> CodecError {
    if header.flags() != 0 {
        return malformed("AUTH with flags");
    }
    if header.remaining > 0 {
        let fixed = v5::FixedHeader::new(header.byte1, header.len - 1, header.remaining);
        if let Err(err) = v5::Auth::read(fixed, frame.freeze()) {
            return malformed(&err.to_string());
        }
    }
    CodecError::Unsupported("AUTH")
}

fn malformed(why: &str) -> CodecError {
    CodecError::Malformed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_v5(bytes: &[u8]) -> (Result<Option<Packet>, CodecError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let result = decode(Version::V5, &mut buf, 1024);
        (result, buf.len())
    }

    #[test]
    fn the_remaining_length_is_read_here() {
        // (bytes, Some((fixed header length, remaining length)), malformed)
        type Row = (&'static [u8], Option<(usize, usize)>, bool);
        let rows: &[Row] = &[
            (&[], None, false),
            (&[0x30], None, false),
            (&[0x30, 0x00], Some((2, 0)), false),
            (&[0x30, 0x7F], Some((2, 127)), false),
            (&[0x30, 0x80], None, false),
            (&[0x30, 0x80, 0x01], Some((3, 128)), false),
            (
                &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
                Some((5, 268_435_455)),
                false,
            ),
            (&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], None, true),
            (&[0x30, 0x80, 0x00], None, true),
        ];
        for (bytes, expected, is_malformed) in rows {
            match header(bytes) {
                Ok(found) => {
                    assert!(!is_malformed, "{bytes:02x?}");
                    assert_eq!(
                        found.map(|h| (h.len, h.remaining)),
                        *expected,
                        "{bytes:02x?}"
                    );
                }
                Err(err) => assert!(is_malformed, "{bytes:02x?}: {err}"),
            }
        }
    }

    #[test]
    fn an_incomplete_frame_stays_in_the_buffer() {
        // PUBLISH QoS 0 to "a/b", empty properties, payload "x", missing its last byte.
        let whole = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'x'];
        let (result, left) = decode_v5(&whole[..8]);
        assert!(matches!(result, Ok(None)));
        assert_eq!(left, 8, "nothing consumed");
        let (result, left) = decode_v5(&whole);
        assert!(matches!(result, Ok(Some(Packet::Publish(_)))));
        assert_eq!(left, 0);
    }

    #[test]
    fn frames_that_end_early_are_malformed_not_incomplete() {
        let mut publish = vec![0x32, 0x15, 0x00, 0x11];
        publish.extend_from_slice(b"cc/v1/open/fz-chk");
        publish.extend_from_slice(&[0x00, 0x09]);
        let rows: &[&[u8]] = &[
            &publish,
            // SUBSCRIBE pkid 9, no property length.
            &[0x82, 0x02, 0x00, 0x09],
            // PUBACK pkid 1 with reason 0x00 and a property length that promises more.
            &[0x40, 0x04, 0x00, 0x01, 0x00, 0x05],
        ];
        for bytes in rows {
            let mut with_ping = bytes.to_vec();
            with_ping.extend_from_slice(&[0xC0, 0x00]);
            let (result, left) = decode_v5(&with_ping);
            assert!(
                matches!(result, Err(CodecError::Malformed(_))),
                "{bytes:02x?}: {result:?}"
            );
            assert_eq!(left, 2, "only the bad frame was taken");
        }
    }

    #[test]
    fn short_disconnects_and_auth() {
        let normal = DisconnectReasonCode::NormalDisconnection;
        let with_will = DisconnectReasonCode::DisconnectWithWillMessage;
        let rows: &[(&[u8], Option<DisconnectReasonCode>)] = &[
            (&[0xE0, 0x00], Some(normal)),
            (&[0xE0, 0x01, 0x00], Some(normal)),
            (&[0xE0, 0x01, 0x04], Some(with_will)),
            (&[0xE0, 0x02, 0x04, 0x00], Some(with_will)),
            // Reason 0x05 does not exist; flags must be 0.
            (&[0xE0, 0x01, 0x05], None),
            (&[0xE1, 0x00], None),
        ];
        for (bytes, expected) in rows {
            match decode_v5(bytes).0 {
                Ok(Some(Packet::Disconnect(d))) => {
                    assert_eq!(Some(d.reason_code), *expected, "{bytes:02x?}")
                }
                other => assert!(expected.is_none(), "{bytes:02x?}: {other:?}"),
            }
        }
        for bytes in [&[0xF0, 0x00][..], &[0xF0, 0x02, 0x19, 0x00]] {
            assert!(
                matches!(decode_v5(bytes).0, Err(CodecError::Unsupported("AUTH"))),
                "{bytes:02x?}"
            );
        }
        assert!(matches!(
            decode_v5(&[0xF0, 0x01, 0x42]).0,
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn the_whole_frame_counts_against_the_limit() {
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x08][..]);
        assert!(matches!(
            decode(Version::V5, &mut buf, 1024),
            Err(CodecError::TooLarge(1024))
        ));
        // 1021 + a 3-byte fixed header is exactly the limit: waits for the body.
        let mut buf = BytesMut::from(&[0x30, 0xFD, 0x07][..]);
        assert!(matches!(decode(Version::V5, &mut buf, 1024), Ok(None)));
    }

    #[test]
    fn the_connect_chooses_the_version() {
        // CONNECT, "MQTT", level 5, flags 2 (clean start), keepalive 60, no properties, id "".
        let v5 = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0];
        let mut buf = BytesMut::from(&v5[..]);
        assert!(matches!(
            decode_connect(&mut buf, 1024),
            Ok(Some((Version::V5, Packet::Connect(..))))
        ));
        let mut buf = BytesMut::from(&v5[..9]);
        assert!(matches!(decode_connect(&mut buf, 1024), Ok(None)));
        let mut level3 = v5;
        level3[8] = 3;
        let mut buf = BytesMut::from(&level3[..]);
        assert!(matches!(
            decode_connect(&mut buf, 1024),
            Err(CodecError::UnsupportedVersion(3))
        ));
        let mut buf = BytesMut::from(&[0x30][..]);
        assert!(matches!(
            decode_connect(&mut buf, 1024),
            Err(CodecError::NotConnect)
        ));
    }
}
