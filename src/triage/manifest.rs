//! Model manifests: `models/<name>/model.toml` beside the `.onnx` file, saying what the model
//! is, which instances it applies to, how to prepare its input, what its outputs mean, and where
//! it comes from. A bad manifest is an error naming the file and the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One score: finding present or not.
    Binary,
    /// Several independent labels.
    MultiLabel,
    /// Per-frame classification of multi-frame images or video (endoscopy).
    PerFrame,
    /// Segments an anatomy to check that an image shows it before the models made for that
    /// anatomy score it (`[gate]`); it has no labels and gets no jobs of its own.
    AnatomyGate,
    /// Finds an endoscope's circular field of view, which models with
    /// `preprocess.field_of_view` are cropped to (`src/triage/field_of_view.rs`); no labels, no
    /// jobs of its own.
    FieldOfView,
}

/// An anatomy models are made for, confirmed by an anatomy gate before they score an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Anatomy {
    /// Frontal chest radiographs: the lung fields.
    Chest,
}

impl std::fmt::Display for Anatomy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Anatomy::Chest => "chest",
        })
    }
}

/// Which instances a model applies to; an empty list accepts anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// Modality (0008,0060) values, e.g. `["CR", "DX"]`.
    pub modalities: Vec<String>,
    /// SOP Class UIDs.
    pub sop_classes: Vec<String>,
    /// Body Part Examined (0018,0015) values, e.g. `["CHEST"]`.
    pub body_parts: Vec<String>,
    /// Photometric Interpretation values.
    pub photometric: Vec<String>,
    /// The anatomy the model is made for, in place of `body_parts`: an instance goes to the
    /// model when its Body Part Examined or a description names that anatomy, or names none
    /// (empty, or not a PS3.16 defined term); the anatomy's gate then looks at the image before
    /// the model scores it. Another defined term (`KNEE`) is not routed.
    pub anatomy: Option<Anatomy>,
}

/// The attributes of an arriving instance that routing looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingKeys<'a> {
    /// Modality (0008,0060).
    pub modality: &'a str,
    /// SOP Class UID.
    pub sop_class: &'a str,
    /// Body Part Examined (0018,0015).
    pub body_part: &'a str,
    /// Photometric Interpretation (0028,0004).
    pub photometric: &'a str,
    /// Study and Series Description.
    pub descriptions: &'a [&'a str],
}

/// What an anatomy gate checks on its mask of the anatomy (the `[gate]` table of a gate's
/// manifest). The thresholds are set from measured images and stated in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// The anatomy it confirms.
    pub anatomy: Anatomy,
    /// Output tensor of per-class scores, `[N, classes, H, W]`; a pixel belongs to the
    /// anatomy when `class` scores highest.
    pub output: String,
    /// Channel of the anatomy's class.
    pub class: usize,
    /// Share of the frame the anatomy covers, `[min, max]`.
    pub area_fraction: [f32; 2],
    /// How many separate regions the anatomy shows (2: the lungs); the largest that many must
    /// each cover at least `region_fraction` of the frame.
    pub regions: usize,
    /// Least share of the frame each of those regions covers.
    pub region_fraction: f32,
    /// Whether those regions lie side by side, one either side of the vertical midline (the
    /// lungs on a frontal view).
    #[serde(default)]
    pub side_by_side: bool,
    /// What a refused image is not, at the start of the reason, e.g. "not a frontal chest
    /// radiograph".
    pub refusal: String,
}

/// What happens to an instance outside a model's declared population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outside {
    /// Not scored: the job ends `skipped` with the reason.
    Skip,
    /// Scored, but the finding is marked outside intended use and never flagged.
    Mark,
}

/// The population a model was made for (its intended use). An empty list accepts anything; an
/// instance whose age or view is unknown is taken as inside, and its finding says which was
/// unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Ages in completed years, both ends included, e.g. `[0, 17]`.
    #[serde(default)]
    pub age_years: Option<AgeRange>,
    /// View Position (0018,5101) values, e.g. `["PA", "AP"]`.
    #[serde(default)]
    pub views: Vec<String>,
    /// Modality (0008,0060) values.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// What happens to an instance outside the population.
    pub outside: Outside,
}

/// An age range in completed years, both ends included; `[min, max]` in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "[u32; 2]", into = "[u32; 2]")]
pub struct AgeRange {
    /// Youngest age inside.
    pub min: u32,
    /// Oldest age inside.
    pub max: u32,
}

impl AgeRange {
    /// Whether `years` (completed) is inside.
    pub fn contains(&self, years: u32) -> bool {
        (self.min..=self.max).contains(&years)
    }
}

impl TryFrom<[u32; 2]> for AgeRange {
    type Error = String;

    fn try_from([min, max]: [u32; 2]) -> Result<AgeRange, String> {
        if min > max || max > 150 {
            return Err(format!(
                "population.age_years [{min}, {max}]: use [youngest, oldest] in years, at most 150"
            ));
        }
        Ok(AgeRange { min, max })
    }
}

impl From<AgeRange> for [u32; 2] {
    fn from(r: AgeRange) -> [u32; 2] {
        [r.min, r.max]
    }
}

impl std::fmt::Display for AgeRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{} years", self.min, self.max)
    }
}

/// How a per-frame model reads a clip (video or multi-frame): frames sampled at a rate in
/// time, spread over the whole clip, and the clip's finding per label as the maximum of the
/// per-frame probabilities smoothed over a window, with the frames where that stays at or
/// above the label's threshold (where it fired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipRule {
    /// Frames sampled per second of the clip (its Frame Time, Cine Rate or Recommended Display
    /// Frame Rate; without any, `preprocess.frame_step` applies). At most
    /// `preprocess.max_frames` are taken, spread evenly over the clip.
    pub sample_fps: f32,
    /// Sampled frames averaged around each one (centred, odd numbers read best); 1: none.
    pub smoothing_frames: u32,
}

/// Tensor memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    /// Batch, channels, height, width.
    Nchw,
    /// Batch, height, width, channels.
    Nhwc,
}

/// The input tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Input tensor name in the ONNX graph.
    pub name: String,
    /// Layout.
    pub layout: Layout,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// 1 (grey) or 3 (grey replicated, or colour).
    pub channels: u32,
    /// Element type; only `float32` is supported.
    #[serde(default = "float32")]
    pub dtype: String,
}

fn float32() -> String {
    "float32".into()
}

/// Where the VOI window comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "source")]
pub enum Window {
    /// The image's own Window Center/Width (or VOI LUT); full range when it has none.
    Image,
    /// The full range of stored values.
    FullRange,
    /// A fixed window.
    Fixed {
        /// Window Center.
        center: f64,
        /// Window Width.
        width: f64,
    },
}

/// How pixels become model input: window to 8 bits (MONOCHROME1 inverted so bone is bright),
/// resize, then `x * scale + offset` per sample, then optional per-channel `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// VOI window.
    #[serde(default = "image_window")]
    pub window: Window,
    /// Resize filter: `nearest`, `triangle` (bilinear), `catmull-rom`, `lanczos3`.
    #[serde(default = "triangle")]
    pub resize_filter: String,
    /// Multiplier applied to 0..255 samples.
    pub scale: f32,
    /// Added after scaling.
    pub offset: f32,
    /// Per-channel mean subtracted after scale/offset (empty: none).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by (empty: none).
    #[serde(default)]
    pub std: Vec<f32>,
    /// For per-frame models: take every k-th frame.
    #[serde(default = "one")]
    pub frame_step: u32,
    /// For per-frame models: at most this many frames.
    #[serde(default = "max_frames")]
    pub max_frames: u32,
    /// Crop and mask each frame to the endoscope's field of view (the field-of-view model)
    /// before resizing; the circle is kept with the finding.
    #[serde(default)]
    pub field_of_view: bool,
}

fn image_window() -> Window {
    Window::Image
}
fn triangle() -> String {
    "triangle".into()
}
fn one() -> u32 {
    1
}
fn max_frames() -> u32 {
    64
}

/// How an output becomes a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Already a probability.
    #[default]
    None,
    /// Logistic function of the value.
    Sigmoid,
    /// Softmax over the output row.
    Softmax,
}

/// How urgent a positive finding is, for worklist ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Read in normal order.
    Routine,
    /// Read soon.
    Urgent,
    /// Read now.
    Emergency,
}

/// One label the model scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Label name, e.g. `pneumonia`.
    pub name: String,
    /// Output tensor name.
    pub output: String,
    /// Column of the output row.
    pub index: usize,
    /// Probability at or above which the label is flagged.
    pub threshold: f32,
    /// Urgency of a flag.
    pub urgency: Urgency,
    /// Activation applied to the output.
    #[serde(default)]
    pub activation: Activation,
    /// The finding as a coded concept for the SR, e.g. SNOMED CT; a private `99TRAMY` code
    /// made from the label name when absent.
    #[serde(default)]
    pub code: Option<CodedConcept>,
}

/// A coded concept (PS3.3 Table 8.8-1: Code Value, Coding Scheme Designator, Code Meaning).
///
/// In a manifest, either a table `{ scheme = "SCT", value = "233604007", meaning = "Pneumonia" }`
/// or the older array `["SCT", "233604007", "Pneumonia"]` (scheme, value, meaning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CodedConceptForm")]
pub struct CodedConcept {
    /// Code Value (0008,0100), e.g. `233604007`.
    pub value: String,
    /// Coding Scheme Designator (0008,0102), e.g. `SCT`, `DCM`.
    pub scheme: String,
    /// Code Meaning (0008,0104), e.g. `Pneumonia`.
    pub meaning: String,
}

impl CodedConcept {
    /// A concept from its value, scheme and meaning.
    pub fn new(value: &str, scheme: &str, meaning: &str) -> CodedConcept {
        CodedConcept {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }
}

/// The two spellings a manifest may use for a [`CodedConcept`].
#[derive(Deserialize)]
#[serde(untagged)]
enum CodedConceptForm {
    Table {
        value: String,
        scheme: String,
        meaning: String,
    },
    /// `[scheme, value, meaning]`, the order manifests have always used.
    Array([String; 3]),
}

impl TryFrom<CodedConceptForm> for CodedConcept {
    type Error = String;

    fn try_from(form: CodedConceptForm) -> Result<CodedConcept, String> {
        let c = match form {
            CodedConceptForm::Table {
                value,
                scheme,
                meaning,
            } => CodedConcept {
                value,
                scheme,
                meaning,
            },
            CodedConceptForm::Array([scheme, value, meaning]) => CodedConcept {
                value,
                scheme,
                meaning,
            },
        };
        // Code Value and Coding Scheme Designator are SH (16 characters), Code Meaning LO (64)
        // (PS3.3 Table 8.8-1, PS3.5 6.2); a longer value needs Long Code Value, which tramy
        // does not write.
        let fits = |v: &str, max: usize| !v.trim().is_empty() && v.chars().count() <= max;
        if !(fits(&c.value, 16) && fits(&c.scheme, 16) && fits(&c.meaning, 64)) {
            return Err(format!(
                "code {{ value = {:?}, scheme = {:?}, meaning = {:?} }}: value and scheme need \
                 1-16 characters, meaning 1-64",
                c.value, c.scheme, c.meaning
            ));
        }
        // No coding scheme designator is all digits (PS3.16 Section 8); a swapped array is.
        if c.scheme.chars().all(|ch| ch.is_ascii_digit()) {
            return Err(format!(
                "code scheme {:?} looks like a code value: the array form is [scheme, value, \
                 meaning]; prefer {{ value = .., scheme = .., meaning = .. }}",
                c.scheme
            ));
        }
        Ok(c)
    }
}

/// Where the model comes from and what it may be used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Origin of the weights.
    pub source: String,
    /// Licence of the weights.
    pub licence: String,
    /// What it was trained on.
    pub training_data: String,
    /// Intended use.
    pub intended_use: String,
    /// Measured validation figures, with the data they were measured on.
    pub validation: String,
    /// The statement shown with every finding, e.g. "Research use only; not for diagnosis."
    pub statement: String,
}

/// A model's words in one language other than the manifest's own English.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    /// The statement shown with every finding.
    #[serde(default)]
    pub statement: Option<String>,
    /// Each label's name as doctors read it, by label name, e.g. `pneumonia = "Viêm phổi"`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ModelManifest {
    /// The statement in language `lang` (a code such as `vi`), else as written.
    pub fn statement_in(&self, lang: &str) -> &str {
        self.translations
            .get(lang)
            .and_then(|t| t.statement.as_deref())
            .unwrap_or(&self.provenance.statement)
    }

    /// Label `label`'s name in language `lang`, if the manifest gives one.
    pub fn label_in(&self, lang: &str, label: &str) -> Option<&str> {
        self.translations
            .get(lang)
            .and_then(|t| t.labels.get(label))
            .map(String::as_str)
    }
}

/// How a model file that may not be redistributed is produced on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The command that writes the model file, run from the repository root.
    pub command: String,
    /// Why the file is not shipped.
    pub why: String,
}

/// A model manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name (unique).
    pub name: String,
    /// Model version.
    pub version: String,
    /// What it does.
    pub task: Task,
    /// The ONNX file, relative to the manifest.
    pub file: PathBuf,
    /// Which instances it applies to.
    #[serde(default)]
    pub routing: Routing,
    /// The population it was made for; none: every routed instance is scored alike.
    #[serde(default)]
    pub population: Option<Population>,
    /// For a per-frame model on clips: how frames are sampled in time and how per-frame scores
    /// become the clip's finding. None: every `frame_step`-th frame, each scored alone.
    #[serde(default)]
    pub clip: Option<ClipRule>,
    /// Its input tensor.
    pub input: Input,
    /// Preprocessing.
    pub preprocess: Preprocess,
    /// What its outputs mean (none for an anatomy gate).
    #[serde(default)]
    pub labels: Vec<Label>,
    /// For an anatomy gate: what it checks.
    #[serde(default)]
    pub gate: Option<GateSpec>,
    /// Where it comes from.
    pub provenance: Provenance,
    /// For models converted at set-up rather than shipped: how to produce the file. Until it
    /// exists the model is "not installed" (a warning), not a broken manifest (an error).
    #[serde(default)]
    pub setup: Option<Setup>,
    /// What doctors read of the model in other languages, by language code (`vi`): the
    /// statement and the labels' names. Untranslated text is shown as written.
    #[serde(default)]
    pub translations: std::collections::BTreeMap<String, Translation>,
    /// Folder the manifest was read from (not in the file).
    #[serde(skip)]
    pub folder: PathBuf,
}

/// Why a manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Invalid TOML or schema.
    #[error("{path}: {source}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// What TOML said (names the field).
        source: toml::de::Error,
    },
    /// The manifest is fine but its model file is produced at set-up and is not there yet.
    #[error("{path}: model file {model} is not installed yet ({why}); produce it with: {command}")]
    NotInstalled {
        /// The manifest.
        path: PathBuf,
        /// The missing model file.
        model: PathBuf,
        /// Why it is not shipped.
        why: String,
        /// The command that produces it.
        command: String,
    },
    /// A value out of range or inconsistent.
    #[error("{path}: {reason}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ModelManifest {
    /// Reads and validates `models/<name>/model.toml`.
    pub fn load(path: &Path) -> Result<ModelManifest, ManifestError> {
        let manifest = ModelManifest::load_routing(path)?;
        if !manifest.model_path().is_file() {
            return Err(manifest.missing_model(path));
        }
        Ok(manifest)
    }

    /// Reads and validates the manifest alone, whether or not its model file is here: what a
    /// node that runs no inference (`tramy serve --no-triage`) needs to queue jobs for the
    /// workers that do.
    pub fn load_routing(path: &Path) -> Result<ModelManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut manifest: ModelManifest =
            toml::from_str(&text).map_err(|source| ManifestError::Parse {
                path: path.to_owned(),
                source,
            })?;
        manifest.folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        manifest
            .validate()
            .map_err(|reason| ManifestError::Invalid {
                path: path.to_owned(),
                reason,
            })?;
        Ok(manifest)
    }

    /// Why the model file of a valid manifest at `path` is missing.
    fn missing_model(&self, path: &Path) -> ManifestError {
        match &self.setup {
            Some(setup) => ManifestError::NotInstalled {
                path: path.to_owned(),
                model: self.model_path(),
                why: setup.why.clone(),
                command: setup.command.clone(),
            },
            None => ManifestError::Invalid {
                path: path.to_owned(),
                reason: format!("model file {} does not exist", self.model_path().display()),
            },
        }
    }

    /// The ONNX file.
    pub fn model_path(&self) -> PathBuf {
        self.folder.join(&self.file)
    }

    fn validate(&self) -> Result<(), String> {
        if self.task == Task::FieldOfView {
            // Its input is strips of the frame at the frame's own width, made by the algorithm
            // (`src/triage/field_of_view.rs`), not by `[preprocess]`.
            return self.validate_task();
        }
        let i = &self.input;
        if i.dtype != "float32" {
            return Err(format!(
                "input.dtype {:?}: only float32 is supported",
                i.dtype
            ));
        }
        if !(i.channels == 1 || i.channels == 3) {
            return Err(format!("input.channels is {}; use 1 or 3", i.channels));
        }
        if i.height == 0 || i.width == 0 || i.height > 4096 || i.width > 4096 {
            return Err("input.height and input.width must be between 1 and 4096".into());
        }
        let p = &self.preprocess;
        for (what, v) in [("mean", &p.mean), ("std", &p.std)] {
            if !v.is_empty() && v.len() != i.channels as usize {
                return Err(format!(
                    "preprocess.{what} has {} values for {} channels",
                    v.len(),
                    i.channels
                ));
            }
        }
        if p.std.contains(&0.0) {
            return Err("preprocess.std must not contain 0".into());
        }
        if !["nearest", "triangle", "catmull-rom", "lanczos3"].contains(&p.resize_filter.as_str()) {
            return Err(format!(
                "preprocess.resize_filter {:?}: use nearest, triangle, catmull-rom or lanczos3",
                p.resize_filter
            ));
        }
        if p.frame_step == 0 || p.max_frames == 0 {
            return Err(
                "preprocess.frame_step and preprocess.max_frames must be at least 1".into(),
            );
        }
        self.validate_task()?;
        for l in &self.labels {
            if !(0.0..=1.0).contains(&l.threshold) {
                return Err(format!(
                    "label {}: threshold {} is not a probability",
                    l.name, l.threshold
                ));
            }
        }
        if let Some(population) = &self.population {
            validate_population(population)?;
        }
        if let Some(clip) = &self.clip {
            if self.task != Task::PerFrame {
                return Err("[clip] is only for task = \"per-frame\"".into());
            }
            if !(clip.sample_fps > 0.0 && clip.sample_fps <= 240.0) || clip.smoothing_frames == 0 {
                return Err("clip.sample_fps must be above 0 (at most 240) and \
                            clip.smoothing_frames at least 1"
                    .into());
            }
        }
        if self.provenance.statement.trim().is_empty() {
            return Err(
                "provenance.statement is empty; say what the model may and may not be used for"
                    .into(),
            );
        }
        Ok(())
    }

    /// A classifier has labels and no `[gate]`; an anatomy gate the reverse, with sane
    /// thresholds; `routing.anatomy` replaces `routing.body_parts`.
    fn validate_task(&self) -> Result<(), String> {
        if self.routing.anatomy.is_some() && !self.routing.body_parts.is_empty() {
            return Err(
                "routing.anatomy decides on Body Part Examined itself: remove \
                        routing.body_parts"
                    .into(),
            );
        }
        if self.task == Task::FieldOfView {
            return if self.labels.is_empty() && self.gate.is_none() {
                Ok(())
            } else {
                Err("a field-of-view model has no [[labels]] and no [gate]".into())
            };
        }
        let Some(gate) = (self.task == Task::AnatomyGate).then_some(&self.gate) else {
            if self.gate.is_some() {
                return Err("[gate] is only for task = \"anatomy-gate\"".into());
            }
            if self.labels.is_empty() {
                return Err("at least one [[labels]] entry is needed".into());
            }
            return Ok(());
        };
        let Some(gate) = gate else {
            return Err("task = \"anatomy-gate\" needs a [gate] table".into());
        };
        if !self.labels.is_empty() {
            return Err("an anatomy gate has no [[labels]]: it scores nothing".into());
        }
        let [min, max] = gate.area_fraction;
        let fraction = |v: f32| (0.0..=1.0).contains(&v);
        if !(fraction(min) && fraction(max) && min <= max && fraction(gate.region_fraction)) {
            return Err(
                "gate.area_fraction [min, max] and gate.region_fraction are shares of \
                        the frame, 0 to 1, min <= max"
                    .into(),
            );
        }
        if gate.regions == 0 || (gate.side_by_side && gate.regions != 2) {
            return Err("gate.regions must be at least 1, and 2 with side_by_side".into());
        }
        Ok(())
    }

    /// Whether this is an anatomy gate rather than a model that scores.
    pub fn is_gate(&self) -> bool {
        self.task == Task::AnatomyGate
    }

    /// Whether this model serves others (an anatomy gate, a field-of-view finder) rather than
    /// scoring instances of its own.
    pub fn is_stage(&self) -> bool {
        matches!(self.task, Task::AnatomyGate | Task::FieldOfView)
    }

    /// Whether the model applies to an instance with these attributes. Gates get no jobs.
    pub fn routes(&self, keys: &RoutingKeys<'_>) -> bool {
        let ok = |list: &[String], v: &str| {
            list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(v.trim()))
        };
        !self.is_stage()
            && ok(&self.routing.modalities, keys.modality)
            && ok(&self.routing.sop_classes, keys.sop_class)
            && ok(&self.routing.body_parts, keys.body_part)
            && ok(&self.routing.photometric, keys.photometric)
            && self
                .routing
                .anatomy
                .is_none_or(|a| anatomy_may_show(a, keys))
    }
}

/// Whether an instance's text leaves it possible that it shows `anatomy`: it names it, or
/// names no region at all.
fn anatomy_may_show(anatomy: Anatomy, keys: &RoutingKeys<'_>) -> bool {
    use crate::dicom::body_part::{stated_region, AnatomyText, StatedRegion};
    let region = stated_region(&AnatomyText {
        body_part_examined: keys.body_part,
        descriptions: keys.descriptions,
    });
    match anatomy {
        Anatomy::Chest => region != StatedRegion::Other,
    }
}

/// Views and modalities are Code Strings (PS3.5 6.2: at most 16 of `A-Z 0-9 _` and space).
fn validate_population(p: &Population) -> Result<(), String> {
    let code_string = |v: &str| {
        !v.trim().is_empty()
            && v.len() <= 16
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' ')
    };
    for (field, values) in [("views", &p.views), ("modalities", &p.modalities)] {
        if let Some(bad) = values.iter().find(|v| !code_string(v)) {
            return Err(format!(
                "population.{field} {bad:?}: a DICOM code string, upper case, e.g. \"PA\" or \"CR\""
            ));
        }
    }
    Ok(())
}

/// Every `*/model.toml` under `dir`, sorted by folder; each loaded or with its error.
pub fn discover(dir: &Path) -> Vec<Result<ModelManifest, ManifestError>> {
    manifest_paths(dir)
        .iter()
        .map(|p| ModelManifest::load(p))
        .collect()
}

/// The manifests in `dir` read for routing alone ([`ModelManifest::load_routing`]).
pub fn discover_routing(dir: &Path) -> Vec<Result<ModelManifest, ManifestError>> {
    manifest_paths(dir)
        .iter()
        .map(|p| ModelManifest::load_routing(p))
        .collect()
}

fn manifest_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("model.toml"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_bring_your_own_manifests_follow_the_schema() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/available");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path().join("model.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let m: ModelManifest =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!m.labels.is_empty() && !m.provenance.statement.is_empty());
            checked += 1;
        }
        assert!(checked >= 1);
    }

    #[test]
    fn a_missing_model_file_is_not_installed_with_setup_and_invalid_without() {
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chest-xray-pneumonia/model.toml");
        let text = std::fs::read_to_string(shipped).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.toml");
        std::fs::write(&path, &text).unwrap();
        match ModelManifest::load(&path) {
            Err(ManifestError::NotInstalled { command, .. }) => {
                assert!(command.contains("convert.py"), "{command}")
            }
            other => panic!("expected NotInstalled, got {other:?}"),
        }
        let without_setup = text.replace("[setup]", "[unused]");
        let without_setup = without_setup
            .lines()
            .filter(|l| !l.starts_with("command =") && !l.starts_with("why ="))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("[unused]\n", "");
        std::fs::write(&path, without_setup).unwrap();
        match ModelManifest::load(&path) {
            Err(ManifestError::Invalid { reason, .. }) => {
                assert!(reason.contains("does not exist"), "{reason}")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn label_code(code: &str) -> Result<Option<CodedConcept>, toml::de::Error> {
        #[derive(Deserialize)]
        struct L {
            code: Option<CodedConcept>,
        }
        toml::from_str::<L>(code).map(|l| l.code)
    }

    #[test]
    fn a_code_is_read_by_name_from_a_table_or_as_scheme_value_meaning_from_an_array() {
        let want = Some(CodedConcept::new("233604007", "SCT", "Pneumonia"));
        let table = r#"code = { value = "233604007", scheme = "SCT", meaning = "Pneumonia" }"#;
        assert_eq!(label_code(table).unwrap(), want);
        let array = r#"code = ["SCT", "233604007", "Pneumonia"]"#;
        assert_eq!(label_code(array).unwrap(), want);
    }

    #[test]
    fn a_swapped_or_oversized_code_is_refused_with_the_reason() {
        let swapped = r#"code = ["233604007", "SCT", "Pneumonia"]"#;
        let e = label_code(swapped).unwrap_err().to_string();
        assert!(e.contains("looks like a code value"), "{e}");
        let long = r#"code = { value = "12345678901234567", scheme = "SCT", meaning = "x" }"#;
        let e = label_code(long).unwrap_err().to_string();
        assert!(e.contains("1-16 characters"), "{e}");
    }

    #[test]
    fn the_shipped_pneumonia_label_is_snomed_ct_pneumonia() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chest-xray-pneumonia/model.toml");
        let m: ModelManifest = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            m.labels[0].code,
            Some(CodedConcept::new("233604007", "SCT", "Pneumonia"))
        );
    }

    #[test]
    fn the_shipped_pneumonia_model_is_for_children_and_marks_adults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chest-xray-pneumonia/model.toml");
        let m = ModelManifest::load_routing(&path).unwrap();
        let p = m.population.expect("a declared population");
        assert_eq!(p.age_years, Some(AgeRange { min: 0, max: 17 }));
        assert_eq!(p.views, ["PA", "AP"]);
        assert_eq!(p.outside, Outside::Mark);
        assert!(m.provenance.intended_use.contains("1-5"));
    }

    /// The error of the shipped pneumonia manifest with `[population]` replaced by `population`.
    fn population_error(population: &str) -> String {
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chest-xray-pneumonia/model.toml");
        let text = std::fs::read_to_string(shipped).unwrap();
        let start = text.find("[population]").unwrap();
        let end = text.find("[input]").unwrap();
        let text = format!("{}{population}\n{}", &text[..start], &text[end..]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.toml");
        std::fs::write(&path, text).unwrap();
        let e = ModelManifest::load_routing(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        e
    }

    #[test]
    fn a_bad_population_is_an_error_naming_the_file_and_the_field() {
        let e = population_error("[population]\nage_years = [17, 0]\noutside = \"mark\"");
        assert!(e.contains("population.age_years [17, 0]"), "{e}");
        let e = population_error("[population]\nage_years = [0, 17]\noutside = \"drop\"");
        assert!(e.contains("outside") && e.contains("skip"), "{e}");
        let e = population_error("[population]\nage_years = [0, 17]");
        assert!(e.contains("missing field `outside`"), "{e}");
        let e = population_error("[population]\nviews = [\"pa\"]\noutside = \"skip\"");
        assert!(e.contains("population.views \"pa\""), "{e}");
        let e = population_error("[population]\nages = [0, 17]\noutside = \"skip\"");
        assert!(e.contains("unknown field `ages`"), "{e}");
    }

    #[test]
    fn torchxrayvision_manifest_has_its_eighteen_labels_in_order() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/available/torchxrayvision-densenet121-res224-all/model.toml");
        let m: ModelManifest = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(m.labels.len(), 18);
        assert!(m.labels.iter().enumerate().all(|(i, l)| l.index == i));
        // 255 maps to 1024 and 0 to -1024.
        assert!((255.0 * m.preprocess.scale + m.preprocess.offset - 1024.0).abs() < 1e-3);
    }
}
