//! SR content items and their encoding (PS3.3 C.17.3).

use dicom_core::VR;
use dicom_dictionary_std::tags;

use crate::encode::dataset::*;
use crate::findings::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Contains,
    HasObsContext,
    HasAcqContext,
    HasConceptMod,
    HasProperties,
    InferredFrom,
    SelectedFrom,
}

impl Rel {
    fn as_str(self) -> &'static str {
        match self {
            Rel::Contains => "CONTAINS",
            Rel::HasObsContext => "HAS OBS CONTEXT",
            Rel::HasAcqContext => "HAS ACQ CONTEXT",
            Rel::HasConceptMod => "HAS CONCEPT MOD",
            Rel::HasProperties => "HAS PROPERTIES",
            Rel::InferredFrom => "INFERRED FROM",
            Rel::SelectedFrom => "SELECTED FROM",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Container { template: Option<&'static str> },
    Text(String),
    Code(Code),
    Num { value: f64, unit: Code },
    UidRef(String),
    Image { class: String, instance: String, frame: Option<u32>, segment: Option<u16> },
    Scoord { graphic_type: &'static str, data: Vec<f32> },
    Scoord3d { graphic_type: &'static str, data: Vec<f32>, frame_of_reference_uid: String },
}

/// One content item and its children.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub rel: Option<Rel>,
    pub name: Code,
    pub value: Value,
    pub children: Vec<Item>,
}

impl Item {
    pub fn new(rel: Rel, name: Code, value: Value) -> Item {
        Item { rel: Some(rel), name, value, children: Vec::new() }
    }

    pub fn container(rel: Option<Rel>, name: Code, template: Option<&'static str>, children: Vec<Item>) -> Item {
        Item { rel, name, value: Value::Container { template }, children }
    }

    pub fn with(mut self, child: Item) -> Item {
        self.children.push(child);
        self
    }

    /// Writes this item's attributes into `o` (the root data set or a Content Sequence item).
    pub fn write_into(&self, o: &mut Obj) {
        if let Some(r) = self.rel {
            put_str(o, tags::RELATIONSHIP_TYPE, VR::CS, r.as_str());
        }
        put_code(o, tags::CONCEPT_NAME_CODE_SEQUENCE, &self.name);
        match &self.value {
            Value::Container { template } => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
                put_str(o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
                if let Some(t) = template {
                    let mut tpl = new_obj();
                    put_str(&mut tpl, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
                    put_str(&mut tpl, tags::TEMPLATE_IDENTIFIER, VR::CS, t);
                    put_seq(o, tags::CONTENT_TEMPLATE_SEQUENCE, vec![tpl]);
                }
            }
            Value::Text(t) => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "TEXT");
                put_str(o, tags::TEXT_VALUE, VR::UT, t);
            }
            Value::Code(c) => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "CODE");
                put_code(o, tags::CONCEPT_CODE_SEQUENCE, c);
            }
            Value::Num { value, unit } => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "NUM");
                let mut mv = new_obj();
                put_code(&mut mv, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit);
                put_ds(&mut mv, tags::NUMERIC_VALUE, &[*value]);
                // the exact value when DS had to round it
                if format_ds(*value).parse::<f64>().ok() != Some(*value) {
                    put_fd(&mut mv, tags::FLOATING_POINT_VALUE, &[*value]);
                }
                put_seq(o, tags::MEASURED_VALUE_SEQUENCE, vec![mv]);
            }
            Value::UidRef(u) => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "UIDREF");
                put_str(o, tags::UID, VR::UI, u);
            }
            Value::Image { class, instance, frame, segment } => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "IMAGE");
                let mut r = sop_ref_item(class, instance);
                if let Some(f) = frame {
                    put_is(&mut r, tags::REFERENCED_FRAME_NUMBER, *f as i64);
                }
                if let Some(s) = segment {
                    put_us(&mut r, tags::REFERENCED_SEGMENT_NUMBER, &[*s]);
                }
                put_seq(o, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
            }
            Value::Scoord { graphic_type, data } => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "SCOORD");
                put_str(o, tags::GRAPHIC_TYPE, VR::CS, graphic_type);
                put_fl(o, tags::GRAPHIC_DATA, data);
            }
            Value::Scoord3d { graphic_type, data, frame_of_reference_uid } => {
                put_str(o, tags::VALUE_TYPE, VR::CS, "SCOORD3D");
                put_str(o, tags::GRAPHIC_TYPE, VR::CS, graphic_type);
                put_fl(o, tags::GRAPHIC_DATA, data);
                put_str(o, tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference_uid);
            }
        }
        if !self.children.is_empty() {
            let items = self
                .children
                .iter()
                .map(|c| {
                    let mut it = new_obj();
                    c.write_into(&mut it);
                    it
                })
                .collect();
            put_seq(o, tags::CONTENT_SEQUENCE, items);
        }
    }
}

/// Concept names used by TID 1500 and its sub-templates.
pub mod names {
    use crate::findings::Code;

    pub fn c(v: &str, s: &str, m: &str) -> Code {
        Code::new(v, s, m)
    }
    pub fn imaging_measurement_report() -> Code {
        c("126000", "DCM", "Imaging Measurement Report")
    }
    pub fn language() -> Code {
        c("121049", "DCM", "Language of Content Item and Descendants")
    }
    pub fn observer_type() -> Code {
        c("121005", "DCM", "Observer Type")
    }
    pub fn device() -> Code {
        c("121007", "DCM", "Device")
    }
    pub fn device_observer_uid() -> Code {
        c("121012", "DCM", "Device Observer UID")
    }
    pub fn device_observer_name() -> Code {
        c("121013", "DCM", "Device Observer Name")
    }
    pub fn device_observer_manufacturer() -> Code {
        c("121014", "DCM", "Device Observer Manufacturer")
    }
    pub fn device_observer_model_name() -> Code {
        c("121015", "DCM", "Device Observer Model Name")
    }
    pub fn device_observer_serial_number() -> Code {
        c("121016", "DCM", "Device Observer Serial Number")
    }
    pub fn procedure_reported() -> Code {
        c("121058", "DCM", "Procedure reported")
    }
    pub fn image_library() -> Code {
        c("111028", "DCM", "Image Library")
    }
    pub fn image_library_group() -> Code {
        c("126200", "DCM", "Image Library Group")
    }
    pub fn source() -> Code {
        c("260753009", "SCT", "Source")
    }
    pub fn modality() -> Code {
        c("121139", "DCM", "Modality")
    }
    pub fn frame_of_reference_uid() -> Code {
        c("112227", "DCM", "Frame of Reference UID")
    }
    pub fn pixel_data_rows() -> Code {
        c("110910", "DCM", "Pixel Data Rows")
    }
    pub fn pixel_data_columns() -> Code {
        c("110911", "DCM", "Pixel Data Columns")
    }
    pub fn imaging_measurements() -> Code {
        c("126010", "DCM", "Imaging Measurements")
    }
    pub fn measurement_group() -> Code {
        c("125007", "DCM", "Measurement Group")
    }
    pub fn tracking_identifier() -> Code {
        c("112039", "DCM", "Tracking Identifier")
    }
    pub fn tracking_uid() -> Code {
        c("112040", "DCM", "Tracking Unique Identifier")
    }
    pub fn finding() -> Code {
        c("121071", "DCM", "Finding")
    }
    pub fn finding_site() -> Code {
        c("363698007", "SCT", "Finding Site")
    }
    pub fn laterality() -> Code {
        c("272741003", "SCT", "Laterality")
    }
    pub fn image_region() -> Code {
        c("111030", "DCM", "Image Region")
    }
    pub fn referenced_segment() -> Code {
        c("121191", "DCM", "Referenced Segment")
    }
    pub fn source_image_for_segmentation() -> Code {
        c("121233", "DCM", "Source image for segmentation")
    }
    pub fn source_series_for_segmentation() -> Code {
        c("121232", "DCM", "Source series for segmentation")
    }
    pub fn measurement_method() -> Code {
        c("370129005", "SCT", "Measurement Method")
    }
    pub fn derivation() -> Code {
        c("121401", "DCM", "Derivation")
    }
    pub fn qualitative_evaluations() -> Code {
        c("C0034375", "UMLS", "Qualitative Evaluations")
    }
    pub fn algorithm_name() -> Code {
        c("111001", "DCM", "Algorithm Name")
    }
    pub fn algorithm_version() -> Code {
        c("111003", "DCM", "Algorithm Version")
    }
    pub fn pixels() -> Code {
        c("{pixels}", "UCUM", "pixels")
    }
}
