/** OHIF Viewer configuration for a viewer served by tramy itself ([http] viewer_dir).
 * Installed as dist/app-config.js by scripts/fetch-ohif.sh. The data source is tramy's DICOMweb
 * on the origin the page came from, so the same file works for any host name or port and
 * needs no CORS. Keys: https://docs.ohif.org/configuration/configurationFiles */
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
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
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
