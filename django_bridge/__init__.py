"""django_bridge: castore for Django, a drop-in for OIOIOI's ``oioioi.filetracker`` app.

Add ``"django_bridge"`` to ``INSTALLED_APPS`` and use:

* :class:`django_bridge.storage.FiletrackerStorage` as ``STORAGES["default"]``;
* :class:`django_bridge.fields.FileField` in models (fixtures carry file contents);
* :func:`django_bridge.client.get_client` for the configured castore client;
* :func:`django_bridge.utils.filetracker_to_django_file` and
  :func:`django_bridge.utils.django_to_filetracker_path` between store paths and fields.

Settings: ``FILETRACKER_CLIENT_FACTORY`` (default
``django_bridge.client.local_store_factory``), ``CASTORE_ROOT`` (embedded store folder),
``CASTORE_METADATA`` / ``CASTORE_BLOBS`` (URLs replacing its database or blob folder),
``FILETRACKER_URL`` and ``FILETRACKER_CACHE_ROOT`` (for ``remote_storage_factory``).
"""
