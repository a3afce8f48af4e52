//! The second factor (R-OP-2): time-based one-time passwords, RFC 6238 (HMAC-SHA-1, 30 s
//! steps, 6 digits — what every authenticator app implements), with a window of one step
//! either side for clock skew and refusal of any code at or before the last accepted step,
//! so a code seen over a shoulder cannot be replayed.

use ring::hmac;
use zeroize::Zeroizing;

/// Why a code is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// No step in the window gives this code.
    #[error("wrong code")]
    Wrong,
    /// The code is right, but its step was already used (or an older one was).
    #[error("code already used")]
    Replayed,
}

/// A TOTP secret with its parameters. The secret is zeroized on drop.
pub struct Totp {
    secret: Zeroizing<Vec<u8>>,
    /// Seconds per step.
    pub step: u64,
    /// Digits per code.
    pub digits: u32,
    /// Steps accepted either side of now.
    pub skew: u64,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Totp(<secret>, {} s, {} digits)", self.step, self.digits)
    }
}

impl Totp {
    /// The usual parameters: 30 s, 6 digits, one step of skew.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: Zeroizing::new(secret.to_vec()),
            step: 30,
            digits: 6,
            skew: 1,
        }
    }

    /// The secret, for enrolment only (shown once as base32 / an otpauth URI).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The code of step `counter` (RFC 4226 HOTP).
    pub fn code(&self, counter: u64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.secret);
        let tag = hmac::sign(&key, &counter.to_be_bytes());
        let mac = tag.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let bin = u32::from_be_bytes([
            mac[offset] & 0x7f,
            mac[offset + 1],
            mac[offset + 2],
            mac[offset + 3],
        ]);
        bin % 10u32.pow(self.digits)
    }

    /// The step `now` (Unix seconds) falls in.
    pub fn counter(&self, now: u64) -> u64 {
        now / self.step.max(1)
    }

    /// Checks `code` at time `now`; `last_used` is the step of the last accepted code. On
    /// success returns the step to remember as the new `last_used`.
    pub fn verify(&self, code: &str, now: u64, last_used: Option<u64>) -> Result<u64, TotpError> {
        let code = code.trim();
        if code.len() != self.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Wrong);
        }
        let Ok(given) = code.parse::<u32>() else {
            return Err(TotpError::Wrong);
        };
        let now = self.counter(now);
        let mut found = None;
        // Every step in the window is computed and compared as one machine word, so timing
        // does not say which step, or how many digits, matched.
        for c in now.saturating_sub(self.skew)..=now + self.skew {
            if self.code(c) == given {
                found = Some(c);
            }
        }
        match (found, last_used) {
            (None, _) => Err(TotpError::Wrong),
            (Some(c), Some(last)) if c <= last => Err(TotpError::Replayed),
            (Some(c), _) => Ok(c),
        }
    }

    /// The `otpauth://` URI authenticator apps scan, for `account` at `issuer`.
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
            escape(issuer),
            escape(account),
            base32(&self.secret),
            escape(issuer),
            self.digits,
            self.step
        )
    }
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// RFC 4648 base32 without padding (how TOTP secrets are typed in).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (upper or lower case, padding and spaces ignored), as an
/// authenticator shows a secret; `None` on any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !matches!(c, ' ' | '=' | '-')) {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits, the 20-byte ASCII secret).
    #[test]
    fn rfc6238_test_vectors() {
        let mut t = Totp::new(b"12345678901234567890");
        t.digits = 8;
        for (time, code) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(t.code(t.counter(time)), code, "T = {time}");
            assert_eq!(
                t.verify(&format!("{code:08}"), time, None),
                Ok(t.counter(time))
            );
        }
    }

    #[test]
    fn rfc4648_base32() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }
}
