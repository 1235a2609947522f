//! GGUF: llama.cpp's single-file model format (reader and writer).

mod read;
mod value;
mod write;

pub use read::{Bytes, GgufFile, TensorInfo};
pub use value::{MetadataExt, Value, ty};
pub use write::{GgufWriter, PlannedTensor, write_streamed};

#[cfg(test)]
mod tests;
