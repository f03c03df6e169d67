//! Association negotiation (PS3.8 7.1, PS3.7 D.3.3): which abstract syntaxes we accept, who may
//! associate, and SCU/SCP role selection so C-GET can send its C-STORE sub-operations back.

use dicom_ul::association::server::{AccessControl, Negotiation};
use dicom_ul::pdu::{AssociationRJServiceUserReason, RequestorRoles, UserIdentity};
use dicom_ul::ServerAssociationOptions;

use crate::config::DimseConfig;
use crate::dicom::{
    is_storage_sop_class, query_retrieve, storage_sop_classes, VERIFICATION_SOP_CLASS,
};

/// Who may associate: the Called AE Title must be ours (when required) and the Calling AE Title
/// must be on the allow-list (when one is configured).
#[derive(Debug, Clone)]
pub struct AePolicy {
    allowed_calling: Vec<String>,
    require_called: bool,
}

impl AccessControl for AePolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if self.require_called && called_ae_title.trim() != this_ae_title.trim() {
            tracing::warn!(
                called_ae_title,
                "association refused: Called AE Title is not ours"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed_calling.is_empty()
            && !self
                .allowed_calling
                .iter()
                .any(|ae| ae.trim() == calling_ae_title.trim())
        {
            tracing::warn!(
                calling_ae_title,
                "association refused: Calling AE Title is not on the allow-list"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Accepts a requestor's proposal to act as SCP for storage SOP classes, which C-GET needs
/// (PS3.4 C.4.3.1), and echoes its SCU role.
#[derive(Debug, Clone, Copy)]
pub struct RoleSelection;

impl Negotiation for RoleSelection {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        Some(RequestorRoles {
            scu: scu_role,
            scp: scp_role && is_storage_sop_class(sop_class_uid),
        })
    }
}

/// The association acceptor options for `config`: every standard storage SOP class,
/// Verification, and the Patient and Study Root Q/R models; every transfer syntax dicom-rs can
/// read, the requestor's first supported choice winning.
pub fn acceptor_options(
    config: &DimseConfig,
    pdu_timeout: std::time::Duration,
) -> ServerAssociationOptions<'static, AePolicy, RoleSelection> {
    let mut options = ServerAssociationOptions::new()
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .read_timeout(pdu_timeout)
        .write_timeout(pdu_timeout)
        .with_abstract_syntax(VERIFICATION_SOP_CLASS);
    for uid in query_retrieve::ALL {
        options = options.with_abstract_syntax(uid);
    }
    for (uid, _) in storage_sop_classes::STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    options
        .ae_access_control(AePolicy {
            allowed_calling: config.allowed_calling_ae_titles.clone(),
            require_called: config.require_called_ae_title,
        })
        .with_negotiation(RoleSelection)
}
