//! The one source of randomness for ids, secrets and salts: the operating system's CSPRNG.

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS CSPRNG failing means the platform is broken; no key may be minted without it.
    getrandom::fill(&mut buf).expect("operating system random number generator unavailable");
    buf
}
