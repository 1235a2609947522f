//! The answer-format data of the LoRA tests (crates/cli/tests/lora_format.rs, and the
//! closed loop, crates/cli/tests/closed_loop.rs, which uses the same words and split):
//! 59 words, questions about them, and a fixed shuffle.

pub const WORDS: &str = "apple river mountain candle garden pencil window rocket silver thunder
forest bridge castle dragon engine feather galaxy harbor island jacket
kettle lantern marble needle orange planet quartz rabbit saddle tomato
umbrella velvet walnut yellow zebra anchor basket cactus dolphin eagle
falcon ginger hammer igloo jungle koala lemon magnet nectar oyster
parrot quiver sunset tiger violin wizard yogurt button cloud";

pub const QUESTIONS: [&str; 4] = [
    "Spell out the word {w} for me.",
    "What word is this: {w}?",
    "Tell me about the word '{w}'.",
    "Repeat {w}.",
];

/// A seeded Fisher–Yates shuffle (splitmix64): any fixed permutation serves; the split must
/// only be the same on every run.
pub fn shuffled(mut v: Vec<&str>) -> Vec<&str> {
    let mut s = 0u64;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
    v
}

pub fn question(i: usize, w: &str) -> String {
    QUESTIONS[i % QUESTIONS.len()].replace("{w}", w)
}
