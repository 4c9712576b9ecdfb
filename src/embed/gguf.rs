//! Reading GGUF model files: metadata and tensors, dequantised for our own forwards.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// An open GGUF file.
pub struct Gguf {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf").field("path", &self.path).field("tensors", &self.content.tensor_infos.len()).finish()
    }
}

impl Gguf {
    /// Opens `path` and reads its header; names the fetch script when the file is missing.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::model(format!("model file {} is missing: run scripts/fetch-models.sh", path.display()))
            } else {
                Error::io(path, e)
            }
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| Error::corrupt(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self { path: path.to_path_buf(), content, reader })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<&Value> {
        self.content.metadata.get(key).ok_or_else(|| Error::model(format!("{}: metadata key `{key}` is missing", self.path.display())))
    }

    /// A metadata value if present.
    pub fn meta_opt(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An integer metadata value.
    pub fn meta_u32(&self, key: &str) -> Result<u32> {
        let v = self.meta(key)?;
        v.to_u32().or_else(|_| v.to_i32().map(|x| x as u32)).or_else(|_| v.to_u64().map(|x| x as u32)).map_err(Error::from)
    }

    /// A float metadata value.
    pub fn meta_f32(&self, key: &str) -> Result<f32> {
        Ok(self.meta(key)?.to_f32()?)
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        Ok(self.meta(key)?.to_string()?.as_str())
    }

    /// Whether the file has a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Loads a tensor, dequantised to `dtype` on `device`.
    pub fn tensor(&mut self, name: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        let q =
            self.content.tensor(&mut self.reader, name, &Device::Cpu).map_err(|e| Error::model_from(format!("{}: tensor `{name}`", self.path.display()), e))?;
        Ok(q.dequantize(&Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
    }
}
