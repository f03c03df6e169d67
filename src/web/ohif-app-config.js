/** OHIF Viewer configuration, served by tramy at /app-config.js (src/web/viewer.rs fills in
 * TRAMY_ORIGIN: `[http] public_url` when set, else the origin the page came from, so the same
 * viewer works for any host name or port and needs no CORS). The viewer's requests carry the
 * signed-in user's session cookie (same origin). Keys:
 * https://docs.ohif.org/configuration/configurationFiles */
const TRAMY_ORIGIN = __TRAMY_ORIGIN__;
window.config = {
  name: 'tramy',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  // The shipped file points at OHIF's public demo server; this one is the only data source.
  defaultDataSourceName: 'tramy',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'tramy',
      configuration: {
        friendlyName: 'tramy',
        name: 'tramy',
        wadoUriRoot: TRAMY_ORIGIN + '/wado',
        qidoRoot: TRAMY_ORIGIN + '/dicomweb',
        wadoRoot: TRAMY_ORIGIN + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        enableStudyLazyLoad: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};

/* OHIF 3.13.2's image loader (cornerstone3D dicom-image-loader `createImage`) reads VOI LUT
 * Function (0028,1056) as an array and keeps its first element, but OHIF's own metadata provider
 * hands it a string, so "LINEAR" becomes "L" and the viewport refuses to draw the image ("Invalid
 * VOI LUT function"): every DX or MG image that states its VOI LUT Function stays black,
 * whichever server it comes from (cornerstone3D issue 2844, OHIF/Viewers issue 6239, open when
 * this was written). Until a release fixes it, a metadata provider ahead of OHIF's gives the value
 * in the shape that code expects; the volume viewports take any value they do not know for
 * LINEAR, the DICOM default (PS3.3 C.11.2.1.3). Remove this when the pinned OHIF reads it right. */
(function passVoiLutFunctionAsArray() {
  let asking = false;
  const provider = (type, imageId) => {
    if (type !== 'voiLutModule' || asking) return undefined;
    asking = true;
    try {
      const voi = window.cornerstone.metaData.get(type, imageId);
      return voi && typeof voi.voiLUTFunction === 'string'
        ? { ...voi, voiLUTFunction: [voi.voiLUTFunction.trim()] }
        : undefined;
    } finally {
      asking = false;
    }
  };
  const install = setInterval(() => {
    if (window.cornerstone && window.cornerstone.metaData) {
      window.cornerstone.metaData.addProvider(provider, 100000);
      clearInterval(install);
    }
  }, 10);
})();
